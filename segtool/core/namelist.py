"""A list of image or case names in a text file (``predict --list FILE``): the subset to work on.

One name a line, as a file name (``a.jpg``, ``case_001.nii.gz``) or a stem (``a``); blank lines
and lines starting with ``#`` are skipped. Unlike a split, a list is what the user asked for by
name: a name that matches nothing is refused (`NameList.check_found`), never skipped, so a
typo cannot shrink the set silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from segtool.core.constants import IMAGE_SUFFIXES
from segtool.core.errors import SegtoolError

#: Suffixes a listed file name may carry; the name is matched by what is left (its stem).
_SUFFIXES = (".nii.gz", ".nii", *IMAGE_SUFFIXES)


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


class NameList(frozenset):
    """The stems (or case names) of a names file; `source` is the file, for messages."""

    source: Path

    def __new__(cls, names: Iterable[str], source: Path) -> NameList:
        """A frozenset of `names` that remembers the file they came from."""
        self = super().__new__(cls, names)
        self.source = source
        return self

    def check_found(self, found: Iterable[str], where: Path) -> None:
        """Refuse the list if any of its names is not among `found` (the names in `where`).

        Raises:
            SegtoolError: naming the list, how many names were not found and the first few.
        """
        missing = sorted(self - set(found))
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise SegtoolError(
                f"{self.source}: {len(missing)} of {len(self)} listed name(s) not found in "
                f"{where}: {shown}; fix the names (one file name or stem a line) or the folder"
            )


def read_text_file(path: Path, what: str, fix: str) -> str:
    """A small text file made by hand (UTF-8, a byte-order mark allowed): names, lists.

    Raises:
        SegtoolError: ``"{path}: not a readable {what} ({why}); {fix}"``.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegtoolError(f"{path}: not a readable {what} ({exc}); {fix}") from exc


def read_name_list(path: Path) -> NameList:
    """The names in `path` (suffixes such as ``.png`` or ``.nii.gz`` removed).

    Raises:
        SegtoolError: an unreadable file, or one that names nothing.
    """
    text = read_text_file(path, "list of names", "pass a UTF-8 text file")
    names = [line.strip() for line in text.splitlines()]
    stems = {_stem(Path(n).name) for n in names if n and not n.startswith("#")}
    if not stems:
        raise SegtoolError(f"{path}: names no image; write one file name or stem a line")
    return NameList(stems, path)
