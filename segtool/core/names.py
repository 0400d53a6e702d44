"""File names that differ only in Unicode normalisation: one name to the user, two to Linux.

"café" can be written with one code point for "é" (NFC, what most tools write) or with "e"
and a combining accent (NFD, what macOS's older file systems and some archivers write). Both
print identically, so an image that "has no mask" beside a mask of the very same printed name
is baffling. Wherever two names meet (image/mask pairs, stems in a folder, masks named after
images), a pair that is equal once normalised is said so, with both spellings written out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path


def nfc(name: str) -> str:
    """`name` in Unicode's composed form (NFC)."""
    return unicodedata.normalize("NFC", name)


def name_key(name: str) -> str:
    """The form under which names collide on some disk: NFC-normalised and case-folded."""
    return nfc(name).casefold()


def spelled_apart(a: str, b: str) -> bool:
    """True when `a` and `b` are different strings that are equal once NFC-normalised."""
    return a != b and nfc(a) == nfc(b)


def spellings(a: str, b: str) -> str:
    """Says that `a` and `b` are one name in two Unicode normalisations, both spellings
    written out (with escapes, as they print alike), and the fix."""
    forms = {unicodedata.normalize(f, a): f for f in ("NFC", "NFD")}
    first, second = forms.get(a, "another form"), forms.get(b, "another form")
    return (
        f"{a!a} ({first}) and {b!a} ({second}) are one name in two Unicode "
        f"normalisations and print alike; rename them to one spelling (NFC: e.g. "
        f"convmv -r -f utf-8 -t utf-8 --nfc --notest FOLDER)"
    )


def twins(names: Iterable[str]) -> dict[str, str]:
    """NFC form -> name, for finding a name's other spelling with `twin_note`."""
    return {nfc(n): n for n in names}


def twin_note(name: str, others: dict[str, str]) -> str:
    """``"; <spellings>"`` when `others` (from `twins`) holds `name` in another spelling,
    else an empty string: appended to a "no partner" line."""
    other = others.get(nfc(name))
    return f"; {spellings(name, other)}" if other is not None and other != name else ""


def sibling_note(path: Path) -> str:
    """`twin_note` for a missing file whose folder holds it in another spelling."""
    try:
        names = twins(p.name for p in path.parent.iterdir())
    except OSError:
        return ""
    return twin_note(path.name, names)
