"""Class names for mask folders that carry none: a names file (``--names``), and the
conventional names of well-known datasets where the folder itself says which it is.

A convention is used only on unambiguous evidence, and the import says what the evidence
was: CamVid's SegNet release (folder named ``CamVid`` with ``train/`` + ``trainannot/``, grey
masks holding only the label ids 0..11) gets its 11 classes, 11 (Unlabelled) ignored; a
CamVid folder with colour masks and its own ``label_colors.txt`` gets that colour table.
PASCAL VOC's 21 classes are in `segtool.sources.maskfolders`.
"""

from __future__ import annotations

from pathlib import Path

from segtool.core.constants import IGNORE_LABEL
from segtool.core.errors import SegtoolError
from segtool.core.namelist import read_text_file
from segtool.sources.records import canonical_label

#: CamVid as SegNet ships it (label ids 0..10; 11 is Unlabelled), with SegNet's colours.
CAMVID_CLASSES = (
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)),
)  # fmt: skip
#: CamVid's class colours by name (the class map keeps them).
CAMVID_COLORS = {color: name for name, color in CAMVID_CLASSES}
#: CamVid's label id for unlabelled pixels, imported as the ignore value.
CAMVID_VOID = 11
#: The colour table CamVid's full release ships beside its images.
CAMVID_COLORS_FILE = "label_colors.txt"


def read_names(path: Path) -> dict[int, str]:
    """A names file: line i (0-based, ``#`` comments and blank lines skipped) names mask
    value i; ``__ignore__`` makes that value the ignore value.

    Raises:
        SegtoolError: an unreadable file, no names, or a name given twice.
    """
    text = read_text_file(path, "names file", "pass a UTF-8 text file")
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [canonical_label(n) for n in names if n]
    if not names:
        raise SegtoolError(f"{path}: no names; write one class name a line, value 0 first")
    seen: dict[str, int] = {}
    for value, name in enumerate(names):
        if name in seen and name != IGNORE_LABEL:
            raise SegtoolError(
                f"{path}: {name!r} names values {seen[name]} and {value}; one name a value"
            )
        seen[name] = value
    return dict(enumerate(names))


def _is_camvid(root: Path) -> bool:
    return "camvid" in root.resolve().name.lower() and (root / "trainannot").is_dir()


def camvid_table(root: Path, found: set[int]) -> tuple[dict[int, str], str] | None:
    """CamVid's names for the grey masks of `root`, with the evidence, or None when the
    folder is not unambiguously SegNet's CamVid (its name, its ``trainannot/``, and only the
    values 0..11 in the masks)."""
    if not (_is_camvid(root) and found and max(found) <= CAMVID_VOID):
        return None
    table = {i: name for i, (name, _) in enumerate(CAMVID_CLASSES)} | {CAMVID_VOID: IGNORE_LABEL}
    why = (
        f"CamVid's 11 classes (SegNet's label ids; {CAMVID_VOID}, Unlabelled, ignored): the "
        f"folder {root.name} has train/ + trainannot/ and masks holding ids 0..{CAMVID_VOID} "
        f"only; pass --names or --values to name the values otherwise"
    )
    return table, why


def conventional_colors(root: Path) -> tuple[Path, str] | None:
    """The colour table a CamVid folder ships (``label_colors.txt`` in it), with the evidence;
    None elsewhere."""
    table = root / CAMVID_COLORS_FILE
    if "camvid" in root.resolve().name.lower() and table.is_file():
        return table, f"the colour table {table} that the CamVid folder {root.name} ships"
    return None
