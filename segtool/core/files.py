"""Writing files and folders so that they appear whole or not at all.

A file is written to a temporary name beside it and renamed onto its place; an output folder
is built beside its target and swapped in at the end. Every stage writes through here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Check `out` may be written and return an empty temporary folder beside it.

    Raises:
        SegtoolError: `out` exists and `overwrite` is not set.
    """
    if out.exists() and not overwrite:
        raise SegtoolError(f"{out}: already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish_output(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder onto `out`, replacing what was there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, out)
