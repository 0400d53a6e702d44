"""Reading what the steps hand each other: JSON documents (any failure one line naming the
file and the fix) and the data files of a folder (hidden files are not data)."""

from __future__ import annotations

import json
from collections.abc import Iterable
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


def read_json(path: Path, kind: str, fix: str) -> Any:
    """Parse a JSON file (`kind` names the document, e.g. ``classes.json``); any failure is one
    line naming the file and `fix`.

    Raises:
        SegtoolError: unreadable, not UTF-8, not JSON, or nested too deeply to be segtool's.
    """
    what = f"{path}: not a readable {kind}"
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise SegtoolError(f"{what} ({exc.strerror or exc}); {fix}") from exc
    except UnicodeDecodeError as exc:
        raise SegtoolError(f"{what} (not UTF-8 text: {exc.reason}); {fix}") from exc
    except json.JSONDecodeError as exc:
        raise SegtoolError(
            f"{what} (not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}); {fix}"
        ) from exc
    except RecursionError as exc:
        raise SegtoolError(f"{what} (JSON nested too deeply); {fix}") from exc
