"""VGG Image Annotator (VIA) JSON -> per-image records.

1.x (``regions`` an object keyed "0", "1"…, images possibly embedded as ``base64_img_data``)
and 2.x (``regions`` a list; an annotation export, or a saved project with
``_via_img_metadata``) are read here; VIA 3 projects go to `segtool.sources.via3`. A region's
class is the value of one region attribute.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError
from segtool.sources.cvat import ellipse_shape
from segtool.sources.records import (
    RELATIVE_NAMES,
    ImageRecord,
    JsonFileError,
    PathEscapeError,
    basename_of,
    canonical_label,
    decode_base64,
    finite_number,
    image_in_folder,
    load_json,
)
from segtool.sources.shapes import Shape
from segtool.sources.via3 import is_via3, read_via3

#: VIA region shapes segtool draws.
SHAPE_NAMES = ("polygon", "polyline", "rect", "circle", "ellipse", "point")


class _RegionError(ValueError):
    pass


def via_entries(doc: Any) -> dict | None:
    """The per-image entries of a VIA 1.x/2.x document, or None when it is not one."""
    if isinstance(doc, dict) and isinstance(doc.get("_via_img_metadata"), dict):
        doc = doc["_via_img_metadata"]
    if not isinstance(doc, dict) or not doc:
        return None
    if all(isinstance(e, dict) and "filename" in e and "regions" in e for e in doc.values()):
        return doc
    return None


def _numbers(attrs: dict, *keys: str) -> list[float]:
    values = [attrs.get(k) for k in keys]
    for key, value in zip(keys, values, strict=True):
        if not finite_number(value):
            raise _RegionError(f"shape attribute {key}={value!r} is not a number")
    return values  # type: ignore[return-value]


def _xy(attrs: dict) -> tuple[tuple[float, float], ...]:
    xs, ys = attrs.get("all_points_x"), attrs.get("all_points_y")
    if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
        raise _RegionError("all_points_x and all_points_y are not two lists of one length")
    if not all(finite_number(v) for v in xs + ys):
        raise _RegionError("all_points_x/all_points_y hold something that is not a number")
    return tuple(zip(xs, ys, strict=True))


def _shape(label: str, attrs: dict) -> Shape:
    name = attrs.get("name")
    if name in ("polygon", "polyline"):
        points = _xy(attrs)
        # VIA repeats the first vertex at the end of some polygons; PIL closes them anyway.
        need = 3 if name == "polygon" else 2
        if len(points) < need:
            raise _RegionError(f"a {name} needs at least {need} points, got {len(points)}")
        return Shape(label, "polygon" if name == "polygon" else "linestrip", points)
    if name == "rect":
        x, y, w, h = _numbers(attrs, "x", "y", "width", "height")
        return Shape(label, "rectangle", ((x, y), (x + w, y + h)))
    if name == "circle":
        cx, cy, r = _numbers(attrs, "cx", "cy", "r")
        return Shape(label, "circle", ((cx, cy), (cx + r, cy)))
    if name == "ellipse":
        cx, cy, rx, ry = _numbers(attrs, "cx", "cy", "rx", "ry")
        theta = attrs.get("theta", 0) or 0  # radians, VIA 2.x only
        if not finite_number(theta):
            raise _RegionError(f"shape attribute theta={theta!r} is not a number")
        return ellipse_shape(label, cx, cy, rx, ry, math.degrees(theta))
    if name == "point":
        cx, cy = _numbers(attrs, "cx", "cy")
        return Shape(label, "point", ((cx, cy),))
    raise _RegionError(
        f"unknown shape {name!r}; segtool draws {', '.join(SHAPE_NAMES)}; fix the region"
    )


def _label(attrs: Any, attribute: str) -> str:
    value = attrs.get(attribute) if isinstance(attrs, dict) else None
    if isinstance(value, dict):  # a checkbox attribute: {"option": true, ...}
        chosen = [k for k, v in value.items() if v]
        if len(chosen) != 1:
            raise _RegionError(
                f"region attribute {attribute!r} has {len(chosen)} options ticked "
                f"({', '.join(map(repr, chosen)) or 'none'}); tick exactly one"
            )
        value = chosen[0]
    if value is not None and not isinstance(value, str):
        raise _RegionError(
            f"region attribute {attribute!r} holds {value!r}, not a class name; set it in VIA"
        )
    if not isinstance(value, str) or not value.strip():
        raise _RegionError(f"it has no class (region attribute {attribute!r} is empty); set it")
    return canonical_label(value.strip())


def _regions(entry: dict) -> list:
    regions = entry.get("regions")
    if isinstance(regions, list):
        return regions
    if isinstance(regions, dict):
        keys = list(regions)
        if all(k.isdigit() for k in keys):
            keys.sort(key=int)
        return [regions[k] for k in keys]
    raise _RegionError("its regions are neither a list nor an object")


def _has_regions(entry: dict) -> bool:
    regions = entry.get("regions")
    return bool(regions) if isinstance(regions, (list, dict)) else False


def choose_attribute(path: Path, doc: Any, entries: dict, attribute: str | None) -> str:
    """The region attribute holding the class: `attribute`, else the only one the file has.

    Raises:
        SegtoolError: `attribute` is used by no region, or no single attribute can be chosen.
    """
    found: set[str] = set()
    if not any(_has_regions(entry) for entry in entries.values()):
        return attribute or ""  # nothing to classify
    if isinstance(doc, dict) and isinstance(doc.get("_via_attributes"), dict):
        declared = doc["_via_attributes"].get("region")
        found |= set(declared) if isinstance(declared, dict) else set()
    for entry in entries.values():
        try:
            regions = _regions(entry)
        except _RegionError:
            continue
        for region in regions:
            attrs = region.get("region_attributes") if isinstance(region, dict) else None
            if isinstance(attrs, dict):
                found |= set(attrs)
    if attribute is not None:
        if attribute not in found:
            raise SegtoolError(
                f"{path}: no region attribute {attribute!r}; the file has "
                f"{', '.join(map(repr, sorted(found))) or 'none'}"
            )
        return attribute
    if len(found) == 1:
        return found.pop()
    if not found:
        raise SegtoolError(
            f"{path}: no region attribute holds a class; name the regions in VIA "
            f"(a region attribute such as 'class')"
        )
    raise SegtoolError(
        f"{path}: several region attributes could hold the class "
        f"({', '.join(map(repr, sorted(found)))}); pick one with --via-attribute NAME"
    )


def _embedded(entry: dict) -> bytes | None:
    data = entry.get("base64_img_data")
    if not isinstance(data, str) or not data:
        return None
    try:
        return decode_base64(data)
    except ValueError as exc:
        raise _RegionError(f"base64_img_data: {exc}") from exc


def read_via(
    path: Path, image_dir: Path | None = None, *, attribute: str | None = None
) -> list[ImageRecord]:
    """Read a VIA JSON file (1.x, 2.x or a VIA 3 project) into one record per image.

    Args:
        path: the VIA JSON file (annotation export or saved project).
        image_dir: where file names start; default: the JSON's folder. A file name that is a
            URL is looked up by its last part.
        attribute: the region attribute naming the class; default: the only one the file has.

    Returns:
        Records with shapes in region order; a record's ``problem`` names the bad region.

    Raises:
        SegtoolError: not a VIA file, or no single class attribute (VIA 3: see `read_via3`).
    """
    image_dir = path.parent if image_dir is None else image_dir
    try:
        doc = load_json(path)
    except JsonFileError as exc:
        raise SegtoolError(f"{path}: {exc}; fix or re-export the file") from exc
    if is_via3(doc):
        return read_via3(path, doc, image_dir, attribute)
    entries = via_entries(doc)
    if entries is None:
        raise SegtoolError(
            f"{path}: not a VIA file (VIA 1.x/2.x: image entries with filename and regions; "
            f"VIA 3: a project with project, file, view and metadata)"
        )
    attribute = choose_attribute(path, doc, entries, attribute)
    records = []
    names: set[str] = set()
    for key, entry in entries.items():
        raw = entry.get("filename")
        if not isinstance(raw, str) or not raw:
            raise SegtoolError(f"{path}: entry {key!r} has no filename; fix the file")
        name = basename_of(raw) if "://" in raw else raw
        where = f"image {name!r}"
        if name in names:
            raise SegtoolError(f"{path}: {where} appears twice; two masks cannot share one name")
        names.add(name)
        shapes, problem, image, data = [], None, None, None
        try:
            image = image_in_folder(image_dir, name)
            data = _embedded(entry)
            regions = _regions(entry)
        except PathEscapeError as exc:
            problem, regions = f"{where}: {exc}; {RELATIVE_NAMES}", []
        except _RegionError as exc:
            problem, regions = f"{where}: {exc}", []
        for k, region in enumerate(regions):
            attrs = region.get("shape_attributes") if isinstance(region, dict) else None
            try:
                if not isinstance(attrs, dict) or "name" not in attrs:
                    raise _RegionError("it has no shape_attributes; redraw it in VIA")
                shapes.append(_shape(_label(region.get("region_attributes"), attribute), attrs))
            except _RegionError as exc:
                problem = f"{where}, region {k}: {exc}"
                break
        records.append(
            ImageRecord(path, name, image, None, None, tuple(shapes), data=data, problem=problem)
        )
    return records
