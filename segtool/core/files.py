"""Writing files and folders so that they appear whole or not at all, and listing inputs.

A file is written to a temporary name beside it and renamed onto its place; an output folder
is built beside its target and swapped in at the end. Every stage writes (and deletes)
through here, so the rules live in one place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError


def list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """The files in `folder` whose suffix (any case) is one of `suffixes`, sorted by name.

    Hidden files (a leading dot, as macOS's ``._x.png``) are not data and are left out.
    """
    wanted = {s.lower() for s in suffixes}
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in wanted and not p.name.startswith(".")
    )


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


def check_overwrite(out: Path, overwrite: bool, alternative: str = "") -> None:
    """Refuse to replace an existing `out` unless `overwrite` is set.

    Args:
        out: the output file or folder.
        overwrite: the user passed ``--overwrite``.
        alternative: another way out, named before ``--overwrite`` (e.g. ``--resume to
            continue it``).

    Raises:
        SegtoolError: `out` exists and `overwrite` is not set.
    """
    if out.exists() and not overwrite:
        other = f"--{alternative} or " if alternative else ""
        raise SegtoolError(f"{out}: already exists; pass {other}--overwrite to replace it")


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Check `out` may be written and return an empty temporary folder beside it.

    Raises:
        SegtoolError: `out` exists and `overwrite` is not set.
    """
    check_overwrite(out, overwrite)
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
        remove(old)
    else:
        os.replace(tmp, out)


@contextmanager
def output_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Build the folder `out` whole or not at all.

    Yields an empty temporary folder beside `out`; when the block finishes it replaces `out`,
    and when the block raises (Ctrl-C included) it is deleted and `out` is left as it was.

    Raises:
        SegtoolError: `out` exists and `overwrite` is not set (before anything is written).
    """
    tmp = prepare_output(out, overwrite)
    try:
        yield tmp
        publish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove(path: Path) -> None:
    """Delete a file or a folder tree (the callers have checked it may go)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
