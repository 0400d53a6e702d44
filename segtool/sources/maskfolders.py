"""Image + mask folders made elsewhere: their layouts, value tables, and mask values -> ids.

Layouts recognised (see `find_layout`): two flat folders; ``images/`` + ``masks/``; the
PASCAL VOC tree; split folders (``train/`` + ``trainannot/`` as CamVid ships, ``train/images`` +
``train/masks``, or ``images/train`` + ``masks/train``). Where a layout carries an official
split, it is kept, so users score on the split everyone else reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segtool.core.constants import BACKGROUND_NAME, IMAGE_SUFFIXES
from segtool.core.errors import SegtoolError
from segtool.core.images import ImageReadError, open_image
from segtool.core.namelist import read_text_file
from segtool.core.names import nfc, spellings, twin_note, twins
from segtool.sources.records import canonical_label

#: PASCAL VOC's classes, by mask value; 255 marks VOC's "void" border pixels (ignored).
VOC_CLASSES = (
    BACKGROUND_NAME, "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
#: Split names and the folder names people give them.
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                 "test": ("test", "testing")}  # fmt: skip
#: Names of mask folders beside image folders.
MASK_DIR_NAMES = ("masks", "labels", "annotations", "annot", "gt", "SegmentationClass")
#: Names of image folders.
IMAGE_DIR_NAMES = ("images", "imgs", "JPEGImages")
#: Suffixes a mask file may have.
MASK_FILE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")
#: Name given to the foreground of a binary mask unless ``--values`` names it.
FOREGROUND_NAME = "foreground"


@dataclass(frozen=True)
class MaskPair:
    """One image and its mask, paired by stem; `split` is its official split, if any."""

    stem: str
    image: Path
    mask: Path
    split: str | None = None


@dataclass
class MaskLayout:
    """What `find_layout` found: the pairs, what kind of tree it was, unpaired files."""

    kind: str
    pairs: list[MaskPair]
    unpaired: list[str] = field(default_factory=list)
    voc: bool = False
    #: the tree's root (None for two folders named by the user)
    root: Path | None = None

    def split(self) -> dict | None:
        """The official split as a ``split.json`` document, or None when there is none."""
        if not any(p.split for p in self.pairs):
            return None
        doc: dict = {"seed": None, "source": f"official split of the {self.kind} layout"}
        for name in SPLIT_ALIASES:
            doc[name] = sorted(p.stem for p in self.pairs if p.split == name)
        return doc


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    spelled: dict[str, str] = {}  # NFC form -> stem
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in files:
                raise SegtoolError(
                    f"{path}: same stem as {files[path.stem]}; pairs are made by file stem, so "
                    f"keep one"
                )
            twin = spelled.get(nfc(path.stem))
            if twin is not None:
                raise SegtoolError(f"{path} and {files[twin]}: {spellings(twin, path.stem)}")
            files[path.stem] = path
            spelled[nfc(path.stem)] = path.stem
    return files


def pair_folders(
    images: Path, masks: Path, split: str | None = None, *, masks_decide: bool = False
) -> tuple[list[MaskPair], list[str]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.*``.

    Args:
        masks_decide: images without a mask are expected (VOC ships masks for a subset).

    Returns:
        (pairs, one line per unpaired file).
    """
    image_files = _files(images, IMAGE_SUFFIXES)
    mask_files = _files(masks, MASK_FILE_SUFFIXES)
    pairs = [
        MaskPair(s, image_files[s], mask_files[s], split)
        for s in sorted(image_files.keys() & mask_files.keys())
    ]
    image_twins, mask_twins = twins(image_files), twins(mask_files)
    lonely = [
        f"{mask_files[s]}: no image {s}.* in {images}{twin_note(s, image_twins)}"
        for s in sorted(mask_files.keys() - image_files.keys())
    ]
    if not masks_decide:
        lonely += [
            f"{image_files[s]}: no mask {s}.* in {masks}{twin_note(s, mask_twins)}"
            for s in sorted(image_files.keys() - mask_files.keys())
        ]
    lonely.sort(key=lambda line: "Unicode" not in line)  # the baffling ones first
    return pairs, lonely


def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _voc_split(root: Path) -> dict[str, str]:
    where: dict[str, str] = {}
    lists = root / "ImageSets" / "Segmentation"
    for name in SPLIT_ALIASES:
        path = lists / f"{name}.txt"
        if path.is_file():
            text = read_text_file(path, "list of image names", "fix or delete it")
            for line in text.split():
                where.setdefault(line.strip(), name)
    return where


def _split_dirs(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, images, masks) for each split folder found under `root`."""
    found = []
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            inner = root / alias
            if inner.is_dir():
                images = _first_dir(inner, IMAGE_DIR_NAMES)
                masks = _first_dir(inner, MASK_DIR_NAMES)
                if images and masks:  # train/images + train/masks
                    found.append((split, images, masks))
                    break
                beside = _first_dir(
                    root,
                    [
                        f"{alias}{s}"
                        for s in ("annot", "_annot", "_labels", "_masks", "labels", "masks")
                    ],
                )
                if beside:  # CamVid: train/ + trainannot/
                    found.append((split, inner, beside))
                    break
            images = _first_dir(root, [f"{d}/{alias}" for d in IMAGE_DIR_NAMES])
            masks = _first_dir(root, [f"{d}/{alias}" for d in MASK_DIR_NAMES])
            if images and masks:  # images/train + masks/train
                found.append((split, images, masks))
                break
    return found


def find_layout(images: Path, masks: Path | None = None) -> MaskLayout:
    """Recognise the layout of an image/mask tree and pair its files.

    Args:
        images: the image folder (with `masks`), or the root of a recognised tree.
        masks: the mask folder; None to recognise the tree at `images`.

    Raises:
        SegtoolError: a folder is missing, or the tree matches no known layout.
    """
    for folder in (images, masks):
        if folder is not None and not folder.is_dir():
            raise SegtoolError(f"{folder}: no such folder")
    if masks is not None:
        pairs, lonely = pair_folders(images, masks)
        return MaskLayout("folders", pairs, lonely)
    root = images
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        pairs, lonely = pair_folders(
            root / "JPEGImages", root / "SegmentationClass", masks_decide=True
        )
        where = _voc_split(root)
        pairs = [MaskPair(p.stem, p.image, p.mask, where.get(p.stem)) for p in pairs]
        return MaskLayout("PASCAL VOC", pairs, lonely, voc=True, root=root)
    splits = _split_dirs(root)
    if splits:
        pairs, lonely = [], []
        for split, image_dir, mask_dir in splits:
            found, alone = pair_folders(image_dir, mask_dir, split)
            pairs += found
            lonely += alone
        seen: dict[str, MaskPair] = {}
        for pair in pairs:
            if pair.stem in seen:
                raise SegtoolError(
                    f"{pair.image}: same stem as {seen[pair.stem].image} (in the "
                    f"{seen[pair.stem].split} split); masks are named by stem, so rename one"
                )
            seen[pair.stem] = pair
        return MaskLayout("split folders", sorted(pairs, key=lambda p: p.stem), lonely, root=root)
    image_dir, mask_dir = _first_dir(root, IMAGE_DIR_NAMES), _first_dir(root, MASK_DIR_NAMES)
    if image_dir and mask_dir:
        pairs, lonely = pair_folders(image_dir, mask_dir)
        return MaskLayout("folders", pairs, lonely, root=root)
    raise SegtoolError(
        f"{root}: no known layout (images/ + masks/, VOC's JPEGImages/ + SegmentationClass/, "
        f"or train/ val/ test/ split folders); pass the image and mask folders: "
        f"segtool import-masks IMAGES MASKS OUT"
    )


# --- value tables ---------------------------------------------------------------------------


def parse_values(spec: str) -> dict[int, str]:
    """``"0=_background_,255=membrane"`` -> {0: "_background_", 255: "membrane"}.

    ``__ignore__`` as a name maps that value to the ignore value.

    Raises:
        SegtoolError: a malformed entry or a value given twice.
    """
    table: dict[int, str] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise SegtoolError(
                f"--values entry {item!r} is not VALUE=NAME; e.g. --values '0=_background_,255=membrane'"
            )
        v = int(value)
        if v in table or v > 65535:
            raise SegtoolError(f"--values: value {v} is given twice or does not fit 16 bits")
        table[v] = canonical_label(name.strip())
    if not table:
        raise SegtoolError("--values is empty; e.g. --values '0=_background_,255=membrane'")
    return table


Color = tuple[int, int, int]


def read_colors(path: Path) -> tuple[dict[Color, str], list[str]]:
    """A colour table: a ``classes.json`` with colours, or ``R G B name`` lines (CamVid style).

    Returns:
        (colour -> class name, names in the file's order).

    Raises:
        SegtoolError: unreadable file, a malformed line, or a colour given twice.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegtoolError(f"{path}: cannot read the colour table ({exc})") from exc
    entries: list[tuple[Color, str]] = []
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
            entries = [(tuple(c["color"]), c["name"]) for c in doc["classes"]]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
            raise SegtoolError(
                f"{path}: not a classes.json with a color for every class ({exc})"
            ) from exc
    else:
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = re.match(r"^(\d+)[\s,]+(\d+)[\s,]+(\d+)[\s,:]+(.+)$", line)
            if not match:
                raise SegtoolError(f"{path}: line {number} {line!r} is not 'R G B name'")
            entries.append((tuple(int(match[k]) for k in (1, 2, 3)), match[4].strip()))
    table: dict[Color, str] = {}
    for color, name in entries:
        if len(color) != 3 or not all(0 <= int(v) <= 255 for v in color):
            raise SegtoolError(f"{path}: colour {color!r} of {name!r} is not R G B 0..255")
        if color in table:
            raise SegtoolError(
                f"{path}: colour {color} is given twice ({table[color]!r}, {name!r})"
            )
        table[color] = canonical_label(name)
    if not table:
        raise SegtoolError(f"{path}: the colour table is empty")
    return table, list(dict.fromkeys(table.values()))


# --- reading one mask ------------------------------------------------------------------------


def read_values(path: Path) -> tuple[np.ndarray, bool]:
    """A mask file's raw values: (array, is_rgb). Grey, 1-bit and 16-bit masks give their
    values, palette PNGs their palette indices, colour masks an ``(H, W)`` array of packed
    ``R << 16 | G << 8 | B``.

    Raises:
        SegtoolError: unreadable file.
    """
    try:
        with open_image(path) as img:  # over the pixel limit: refused before decoding
            mode = img.mode
            if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
                rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
                return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2], True
            if mode in ("LA", "PA"):
                img = img.getchannel(0)
            array = np.asarray(img)
    except ImageReadError as exc:
        raise SegtoolError(f"{path}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise SegtoolError(f"{path}: not a readable mask image ({exc}); re-export it") from exc
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise SegtoolError(f"{path}: mask of type {array.dtype} {array.shape} is not a label mask")
    return array, False


def unpack(color: int) -> Color:
    """A packed colour as (R, G, B)."""
    return (color >> 16) & 255, (color >> 8) & 255, color & 255


def value_counts(values: np.ndarray) -> dict[int, int]:
    """Pixel count of every value present."""
    if values.dtype.itemsize <= 2 and values.dtype.kind == "u":
        counts = np.bincount(values.ravel())
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    found, counts = np.unique(values, return_counts=True)
    return dict(zip(found.tolist(), counts.tolist(), strict=True))


def map_values(values: np.ndarray, table: dict[int, int], fill: int | None) -> np.ndarray:
    """Replace every value by ``table[value]`` (unmapped ones by `fill`).

    Raises:
        KeyError: an unmapped value when `fill` is None (callers check values first).
    """
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        lut = np.zeros(1 << (8 * values.dtype.itemsize), np.int32)
        lut[:] = -1 if fill is None else fill
        for value, target in table.items():
            if value < lut.size:
                lut[value] = target
        mapped = lut[values]
        if fill is None and (mapped < 0).any():
            raise KeyError("unmapped value")
        return mapped.astype(np.uint16)
    present, index = np.unique(values, return_inverse=True)
    targets = [table.get(int(v), fill) for v in present]
    if any(v is None for v in targets):
        raise KeyError("unmapped value")
    return np.asarray(targets, dtype=np.uint16)[index.reshape(values.shape)]


def describe(value: int, rgb: bool) -> str:
    """A value as users see it: ``255`` or ``(128, 64, 0)``."""
    return str(unpack(value)) if rgb else str(value)
