"""Output folders that appear whole or not at all: built beside their target, then renamed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from segtool.errors import SegtoolError


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
