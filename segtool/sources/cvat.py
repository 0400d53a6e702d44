"""CVAT for images 1.1 XML -> per-image records.

The XML is read with defusedxml: a document type, an entity definition or an external
reference is refused, so a crafted file cannot expand into gigabytes or read local files.
Shapes are drawn in ``z_order``, then in file order (CVAT's own overlap rule).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as StdElementTree
from dataclasses import replace
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException, ElementTree

from segtool.core.errors import SegtoolError
from segtool.core.limits import size_problem
from segtool.sources.records import (
    ImageRecord,
    PathEscapeError,
    canonical_label,
    image_in_folder,
)
from segtool.sources.shapes import Shape

#: CVAT shape elements segtool draws, and how (see `_shape`).
SHAPE_TAGS = ("polygon", "box", "polyline", "points", "ellipse", "mask")
#: Elements inside ``<image>`` that carry no pixels (an image-level tag).
SKIPPED_TAGS = ("tag",)
#: A mask box's left or top farther from the image than this is damaged (no image is so wide).
_FAR = 2**31


class _RegionError(ValueError):
    pass


def _float(element: StdElementTree.Element, name: str) -> float:
    raw = element.get(name)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _RegionError(f"attribute {name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _RegionError(f"attribute {name}={raw!r} is not finite")
    return value


def _rotation(element: StdElementTree.Element) -> float:
    """A shape's ``rotation`` in degrees (0 when absent)."""
    return _float(element, "rotation") if element.get("rotation") else 0.0


def _points(element: StdElementTree.Element) -> tuple[tuple[float, float], ...]:
    raw = element.get("points") or ""
    points = []
    for pair in raw.split(";"):
        parts = pair.split(",")
        try:
            x, y = (float(v) for v in parts)
        except ValueError:
            raise _RegionError(f"point {pair!r} is not 'x,y'") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise _RegionError(f"point {pair!r} is not finite")
        points.append((x, y))
    return tuple(points)


def rotated_corners(
    x1: float, y1: float, x2: float, y2: float, degrees: float, pivot: tuple[float, float]
) -> tuple[tuple[float, float], ...]:
    """The corners of box (x1, y1)-(x2, y2) turned `degrees` clockwise on screen about `pivot`."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    px, py = pivot
    return tuple(
        (px + (x - px) * cos - (y - py) * sin, py + (x - px) * sin + (y - py) * cos)
        for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
    )


def ellipse_shape(label: str, cx: float, cy: float, rx: float, ry: float, degrees: float) -> Shape:
    """An ellipse: PIL's own ellipse when axis-aligned, else a 4-degree polygon, turned clockwise."""
    rx, ry = abs(rx), abs(ry)
    if degrees % 360 == 0:
        return Shape(label, "ellipse", ((cx - rx, cy - ry), (cx + rx, cy + ry)))
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    points = []
    for k in range(90):
        t = 2 * math.pi * k / 90
        ex, ey = rx * math.cos(t), ry * math.sin(t)
        points.append((cx + ex * cos - ey * sin, cy + ex * sin + ey * cos))
    return Shape(label, "polygon", tuple(points))


def decode_cvat_rle(counts: list[int], width: int, height: int) -> np.ndarray:
    """A CVAT mask patch: run lengths row by row across the box, background first."""
    values = np.zeros(len(counts), np.bool_)
    values[1::2] = True
    return np.repeat(values, counts).reshape(height, width)


def _mask(label: str, element: StdElementTree.Element) -> Shape:
    try:
        counts = [int(v) for v in (element.get("rle") or "").split(",")]
    except ValueError:
        raise _RegionError("its rle is not a comma-separated list of whole numbers") from None
    box = [_float(element, k) for k in ("left", "top", "width", "height")]
    if not all(v.is_integer() for v in box) or box[2] < 1 or box[3] < 1:
        raise _RegionError(f"left/top/width/height {box} are not whole numbers with a size")
    left, top, width, height = (int(v) for v in box)
    # The part of the box off the image is clipped (as labelme clips a mask shape), but a box
    # claiming gigabytes, or placed where no integer reaches, is a damaged file.
    too_big = size_problem(width, height)
    if too_big or max(abs(left), abs(top)) > _FAR:
        where = too_big or f"left {left:g}, top {top:g}"
        raise _RegionError(f"its box ({where}) cannot be a mask of this image; re-export")
    if any(c < 0 for c in counts):
        raise _RegionError("its rle holds a negative run length; re-export")
    if sum(counts) != width * height:
        raise _RegionError(
            f"its rle covers {sum(counts)} pixels, not its box's {width} x {height}; re-export"
        )
    patch = decode_cvat_rle(counts, width, height)
    # A mask shape's patch sits at its first point; whole-number corners crop it to the box.
    corners = ((left, top), (left + width - 1, top + height - 1))
    return Shape(label, "mask", corners, mask=patch)


def _shape(element: StdElementTree.Element) -> list[Shape]:
    label = element.get("label")
    if not label:
        raise _RegionError("it has no label")
    label = canonical_label(label)
    tag = element.tag
    if tag == "polygon":
        points = _points(element)
        if len(points) < 3:
            raise _RegionError(f"a polygon needs at least 3 points, got {len(points)}")
        return [Shape(label, "polygon", points)]
    if tag == "polyline":
        points = _points(element)
        if len(points) < 2:
            raise _RegionError(f"a polyline needs at least 2 points, got {len(points)}")
        return [Shape(label, "linestrip", points)]
    if tag == "points":
        return [Shape(label, "point", (p,)) for p in _points(element)]
    if tag == "box":
        x1, y1, x2, y2 = (_float(element, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        rotation = _rotation(element)
        if rotation % 360 == 0:
            return [Shape(label, "rectangle", ((x1, y1), (x2, y2)))]
        pivot = ((x1 + x2) / 2, (y1 + y2) / 2)
        corners = rotated_corners(x1, y1, x2, y2, rotation, pivot)
        return [Shape(label, "oriented_rectangle", corners)]
    if tag == "ellipse":
        cx, cy, rx, ry = (_float(element, k) for k in ("cx", "cy", "rx", "ry"))
        return [ellipse_shape(label, cx, cy, rx, ry, _rotation(element))]
    return [_mask(label, element)]


def _with_object(
    shapes: list[Shape], element: StdElementTree.Element, k: int, groups: dict[str, int]
) -> list[Shape]:
    """`shapes` (of the `k`-th element) tagged with their object: CVAT's ``group_id`` (absent
    or 0: no group) joins elements into one object, whatever their labels, as CVAT's own
    exports merge a group into one instance; the object's key is its first element's position.
    """
    group = (element.get("group_id") or "").strip()
    first = k if group in ("", "0") else groups.setdefault(group, k)
    return [replace(shape, instance=first) for shape in shapes]


def _parse(path: Path) -> StdElementTree.Element:
    try:
        return ElementTree.parse(path, forbid_dtd=True).getroot()
    except DefusedXmlException as exc:
        raise SegtoolError(
            f"{path}: refused: the XML declares a document type or entities ({type(exc).__name__}); "
            f"CVAT never writes those, so re-export the annotations from CVAT"
        ) from exc
    except StdElementTree.ParseError as exc:
        raise SegtoolError(f"{path}: not well-formed XML ({exc}); re-export it") from exc
    except (ValueError, LookupError) as exc:  # an encoding expat cannot read (UTF-7, unknown)
        raise SegtoolError(
            f"{path}: an XML encoding segtool cannot read ({exc}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise SegtoolError(f"{path}: cannot read the file ({exc})") from exc


def read_cvat(path: Path, image_dir: Path | None = None) -> list[ImageRecord]:
    """Read a CVAT for images 1.1 XML export into one record per ``<image>``.

    Args:
        path: the ``annotations.xml`` file.
        image_dir: where image names start; default: an ``images/`` folder beside the XML
            (CVAT's export layout) when it exists, else the XML's folder.

    Returns:
        Records whose shapes are sorted by ``z_order`` (stable: file order among equals). A
        record's ``problem`` names the region that cannot be drawn.

    Raises:
        SegtoolError: unreadable or unsafe XML, or not a CVAT for images file.
    """
    root = _parse(path)
    if image_dir is None:
        image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    if root.tag != "annotations":
        raise SegtoolError(f"{path}: root element <{root.tag}> is not CVAT's <annotations>")
    if root.find("track") is not None:
        raise SegtoolError(
            f"{path}: a 'CVAT for video' export (<track> elements); export the task as "
            f"'CVAT for images 1.1' instead"
        )
    records = []
    names: set[str] = set()
    for element in root.iter("image"):
        name = element.get("name") or ""
        where = f"image {name!r}"
        if not name:
            raise SegtoolError(f"{path}: <image id={element.get('id')!r}> has no name; re-export")
        if name in names:
            raise SegtoolError(f"{path}: {where} appears twice; two masks cannot share one name")
        names.add(name)
        try:
            width, height = int(element.get("width", "")), int(element.get("height", ""))
        except ValueError:
            width = height = None
        problem, image = None, None
        if width is None or height is None:
            problem = (
                f"{where}: width/height {element.get('width')!r} x {element.get('height')!r} "
                f"are not whole numbers"
            )
        try:
            image = image_in_folder(image_dir, name)
        except PathEscapeError as exc:
            problem = f"{where}: {exc}; image names must be relative to the image folder"
        ordered: list[tuple[int, int, list[Shape]]] = []
        groups: dict[str, int] = {}
        for k, child in enumerate(element):
            if problem or child.tag in SKIPPED_TAGS:
                continue
            region = f"{where}, <{child.tag}> {k} ({child.get('label')!r})"
            if child.tag not in SHAPE_TAGS:
                problem = (
                    f"{region}: unknown shape kind <{child.tag}>; segtool draws "
                    f"{', '.join(SHAPE_TAGS)}; delete it or convert it in CVAT"
                )
                continue
            try:
                z_order = _float(child, "z_order") if child.get("z_order") else 0
                if not float(z_order).is_integer():
                    raise _RegionError(f"z_order {child.get('z_order')!r} is not a whole number")
                ordered.append((z_order, k, _with_object(_shape(child), child, k, groups)))
            except (_RegionError, ValueError) as exc:
                problem = f"{region}: {exc}; fix or delete the region"
        ordered.sort(key=lambda item: (item[0], item[1]))
        shapes = tuple(s for _, _, group in ordered for s in group)
        records.append(
            ImageRecord(
                path, name, image, width, height, shapes if not problem else (), problem=problem
            )
        )
    return records
