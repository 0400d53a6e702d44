"""Ultralytics YOLO segmentation labels -> per-image records.

The layout Ultralytics reads: a ``data.yaml`` whose ``names`` (a list, or a dict ``{0: name}``)
give the classes, and images in folders named ``images`` with their labels in the sibling
``labels`` folder (``images/train/a.jpg`` -> ``labels/train/a.txt``, Ultralytics'
``img2label_paths``: the last ``images`` in the path becomes ``labels``, the suffix ``.txt``).
Each label line is one object: the class index, then the polygon's x y pairs normalised by
the image's width and height. An image without a label file has no objects (Ultralytics'
background images).

Polygons are denormalised (x times the width, y times the height, the image as displayed)
and drawn in line order by the one drawing path (labelme's rule). Class ids are the indices
plus one, in ``names`` order (0 is the background). A bad line (coordinates outside 0..1,
as Ultralytics' own check refuses, an unknown class index, an odd number of coordinates,
fewer than three points, something that is no number) makes its image invalid, naming the
label file and the line.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from segtool.core.constants import IMAGE_SUFFIXES
from segtool.core.errors import SegtoolError
from segtool.core.images import ImageReadError, displayed_size
from segtool.sources.records import ImageRecord, canonical_label
from segtool.sources.shapes import Shape

#: The file names that make a folder a YOLO dataset.
YAML_NAMES = ("data.yaml", "data.yml")
#: The folder Ultralytics looks for images in, and the one beside it for their labels.
IMAGES, LABELS = "images", "labels"


def yaml_in(folder: Path) -> Path | None:
    """The folder's ``data.yaml`` (or ``data.yml``), if it has one."""
    for name in YAML_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def class_names(path: Path) -> tuple[str, ...]:
    """The classes of a ``data.yaml``, in index order.

    Raises:
        SegtoolError: not YAML, no ``names``, or names that are not a list of strings or a
            dict whose keys are the indices 0..n-1.
    """
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SegtoolError(f"{path}: cannot read it as YAML ({exc}); fix the file") from exc
    names: Any = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0))
        if keys != list(range(len(names))):
            raise SegtoolError(
                f"{path}: names has the keys {sorted(map(str, names))}; a dict of names needs "
                f"the class indices 0..{len(names) - 1} as keys"
            )
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise SegtoolError(
            f"{path}: no class names (expected names: [cat, dog] or names: {{0: cat, 1: dog}})"
        )
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise SegtoolError(f"{path}: class name {bad[0]!r} is not a name; fix names")
    return tuple(canonical_label(n) for n in names)


def label_path(image: Path) -> Path | None:
    """The label file of an image (the last ``images`` folder in its path swapped for
    ``labels``), or None when the path has no ``images`` folder."""
    parts = list(image.parts[:-1])
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == IMAGES:
            parts[i] = LABELS
            return Path(*parts, image.stem + ".txt")
    return None


def parse_line(line: str, classes: tuple[str, ...], width: int, height: int) -> Shape:
    """One label line -> a polygon in pixels.

    Raises:
        ValueError: what is wrong with the line, and the fix.
    """
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise ValueError(f"{line.strip()[:60]!r} is not numbers; fix the line") from None
    index, coords = values[0], values[1:]
    if not (index == int(index) if math.isfinite(index) else False) or not (
        0 <= index < len(classes)
    ):
        raise ValueError(
            f"class index {fields[0]} is not one of data.yaml's {len(classes)} classes "
            f"(0..{len(classes) - 1}); fix the index or add the class to names"
        )
    if len(coords) % 2:
        raise ValueError(
            f"{len(coords)} coordinates, an odd count; each point is an x y pair, fix the line"
        )
    if len(coords) < 6:
        what = "a detection box (x y w h)" if len(coords) == 4 else f"{len(coords) // 2} point(s)"
        raise ValueError(
            f"{what}, not a polygon of at least 3 points; segtool reads segment labels"
        )
    outside = next((v for v in coords if not 0 <= v <= 1), None)  # NaN fails too
    if outside is not None:
        raise ValueError(
            f"coordinate {outside:g} lies outside 0..1; YOLO coordinates are normalised by the "
            f"image's size, fix the line"
        )
    points = tuple((x * width, y * height) for x, y in zip(coords[0::2], coords[1::2], strict=True))
    return Shape(classes[int(index)], "polygon", points)


def _record(root: Path, image: Path, classes: tuple[str, ...]) -> ImageRecord:
    """One image's record, its problem naming the label file and line."""
    relative = image.relative_to(root)
    name = relative.as_posix()
    labels = root / label_path(relative)  # an images/ folder below root: never None here
    export = labels if labels.is_file() else image
    try:
        width, height, _ = displayed_size(image, verify=False)
    except ImageReadError as exc:
        return ImageRecord(export, name, image, None, None, problem=f"image {name!r}: {exc}")
    if export == image:
        return ImageRecord(export, name, image, width, height)  # a background image
    shapes = []
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return ImageRecord(export, name, image, width, height, problem=f"cannot read it ({exc})")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            shapes.append(parse_line(line, classes, width, height))
        except ValueError as exc:
            problem = f"line {number}: {exc}"
            return ImageRecord(export, name, image, width, height, problem=problem)
    return ImageRecord(export, name, image, width, height, tuple(shapes))


def read_yolo(path: Path) -> list[ImageRecord]:
    """Read a YOLO segmentation dataset: one record per image, carrying data.yaml's class
    names (`ImageRecord.classes`), which give the class ids.

    Args:
        path: the dataset folder (holding ``data.yaml``) or the ``data.yaml`` itself; images
            are searched below its folder, in folders named ``images``.

    Raises:
        SegtoolError: no ``data.yaml``, bad names, or no image in an ``images`` folder.
    """
    yaml_file = path if path.is_file() else yaml_in(path)
    if yaml_file is None:
        raise SegtoolError(
            f"{path}: no data.yaml; a YOLO dataset is a folder with data.yaml (names) and "
            f"images/ beside labels/"
        )
    classes = class_names(yaml_file)
    root = yaml_file.parent
    suffixes = {s.lower() for s in IMAGE_SUFFIXES}
    images = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in suffixes
        and not p.name.startswith(".")
        and label_path(p.relative_to(root)) is not None
        and p.is_file()
    )
    if not images:
        raise SegtoolError(
            f"{root}: no images in an images/ folder; Ultralytics lays out images/ (e.g. "
            f"images/train/a.jpg) beside labels/ (labels/train/a.txt)"
        )
    return [replace(_record(root, image, classes), classes=classes) for image in images]
