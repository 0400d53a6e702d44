"""VGG Image Annotator 3.x projects -> per-image records.

A VIA 3 project (what VIA 3's "save project" writes) is one JSON object with ``project``,
``config``, ``attribute``, ``file``, ``view`` and ``metadata``. A view shows files
(``view[vid].fid_list`` -> ``file[fid]``); a metadata entry is one annotation of a view: its
time span ``z`` (empty on images), its shape ``xy`` (a shape id, then coordinates) and its
attribute values ``av`` (attribute id -> a text, or option ids for dropdown, radio and
checkbox attributes). segtool reads image projects: one record per view of one image, its
regions in file order, each turned into the Shape the same region drawn in VIA 2 gives, so
the two versions rasterize to the same pixels.
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
    PathEscapeError,
    basename_of,
    canonical_label,
    decode_base64,
    finite_number,
    image_in_folder,
)
from segtool.sources.shapes import Shape

#: VIA 3's region shape ids (its ``_VIA_RSHAPE``).
SHAPE_IDS = {
    1: "POINT",
    2: "RECTANGLE",
    3: "CIRCLE",
    4: "ELLIPSE",
    5: "LINE",
    6: "POLYLINE",
    7: "POLYGON",
    8: "EXTREME_RECTANGLE",
    9: "EXTREME_CIRCLE",
}
#: What follows the shape id in ``xy`` for the shapes of fixed size, and how many numbers.
_LAYOUT = {
    1: ("x, y", 2),
    2: ("x, y, width, height", 4),
    3: ("cx, cy, r", 3),
    4: ("cx, cy, rx, ry", 4),
    5: ("x1, y1, x2, y2", 4),
    8: ("x1, y1, x2, y2, x3, y3, x4, y4", 8),
    9: ("x1, y1, x2, y2, x3, y3", 6),
}
#: The fewest points a shape of any number of points needs.
_MIN_POINTS = {6: 2, 7: 3}
#: VIA 3's file types (``_VIA_FILE_TYPE``); segtool reads images only.
_FILE_TYPES = {2: "an image", 4: "a video", 8: "an audio file"}
_IMAGE = 2
#: VIA 3's file locations (``_VIA_FILE_LOC``) whose ``fname`` names the file; others use ``src``.
_LOC_LOCAL, _LOC_INLINE = 1, 4
#: VIA 3's attribute types (``_VIA_ATTRIBUTE_TYPE``): text is the value, the others option ids.
_TEXT, _CHECKBOX = 1, 2
#: The anchor of an attribute of a region drawn on an image.
_REGION_ANCHOR = "FILE1_Z0_XY1"


class _RegionError(ValueError):
    pass


def is_via3(doc: Any) -> bool:
    """True for a VIA 3 project: an object whose project, file, view and metadata are objects."""
    keys = ("project", "file", "view", "metadata")
    return isinstance(doc, dict) and all(isinstance(doc.get(k), dict) for k in keys)


def _points(numbers: list[float]) -> tuple[tuple[float, float], ...]:
    return tuple(zip(numbers[0::2], numbers[1::2], strict=True))


def _circumcircle(points: tuple[tuple[float, float], ...]) -> tuple[float, float, float]:
    """(cx, cy, r) of the circle through three points (VIA 3's EXTREME_CIRCLE)."""
    (ax, ay), (bx, by), (cx, cy) = points
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if d == 0:
        raise _RegionError("its three points lie on one line, so no circle passes through them")
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    return ux, uy, math.hypot(ax - ux, ay - uy)


def _numbers(xy: Any) -> tuple[int, list[float]]:
    """The shape id and coordinates of an ``xy`` list, checked."""
    if not isinstance(xy, list) or not xy:
        raise _RegionError(f"its xy {xy!r} is not a list starting with a shape id")
    shape_id, numbers = xy[0], xy[1:]
    if not isinstance(shape_id, int) or isinstance(shape_id, bool) or shape_id not in SHAPE_IDS:
        known = ", ".join(f"{k} {v}" for k, v in SHAPE_IDS.items())
        raise _RegionError(
            f"unknown shape id {shape_id!r}; segtool draws VIA 3's shapes ({known}); "
            f"redraw the region in VIA"
        )
    if not all(finite_number(v) for v in numbers):
        raise _RegionError(f"its xy {xy!r} holds something that is not a number")
    name = SHAPE_IDS[shape_id]
    if shape_id in _LAYOUT:
        layout, need = _LAYOUT[shape_id]
        if len(numbers) != need:
            raise _RegionError(
                f"shape {name} is xy = [{shape_id}, {layout}], but {len(numbers)} numbers follow "
                f"the id; redraw the region in VIA"
            )
    elif len(numbers) % 2 or len(numbers) < 2 * _MIN_POINTS[shape_id]:
        raise _RegionError(
            f"shape {name} is xy = [{shape_id}, x1, y1, x2, y2, ...] with at least "
            f"{_MIN_POINTS[shape_id]} points, but {len(numbers)} numbers follow the id; "
            f"redraw the region in VIA"
        )
    return shape_id, numbers


def region_shape(label: str, xy: Any) -> Shape:
    """The Shape of one VIA 3 region, as the same region drawn in VIA 2 gives it.

    Raises:
        ValueError: an unknown shape id or malformed coordinates, saying how to fix them.
    """
    shape_id, v = _numbers(xy)
    if shape_id == 1:  # POINT
        return Shape(label, "point", ((v[0], v[1]),))
    if shape_id == 2:  # RECTANGLE: top-left corner, width, height
        return Shape(label, "rectangle", ((v[0], v[1]), (v[0] + v[2], v[1] + v[3])))
    if shape_id == 3:  # CIRCLE: centre and radius
        return Shape(label, "circle", ((v[0], v[1]), (v[0] + v[2], v[1])))
    if shape_id == 4:  # ELLIPSE: centre and the two radii, never turned
        return ellipse_shape(label, v[0], v[1], v[2], v[3], 0.0)
    if shape_id in (5, 6):  # LINE and POLYLINE: VIA 2's polyline
        return Shape(label, "linestrip", _points(v))
    if shape_id == 7:
        return Shape(label, "polygon", _points(v))
    points = _points(v)
    if shape_id == 8:  # EXTREME_RECTANGLE: the box around four extreme points
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return Shape(label, "rectangle", ((min(xs), min(ys)), (max(xs), max(ys))))
    cx, cy, r = _circumcircle(points)  # EXTREME_CIRCLE: the circle through three points
    return Shape(label, "circle", ((cx, cy), (cx + r, cy)))


def _region_attributes(doc: dict) -> dict[str, dict]:
    """The attributes of regions on images, by id."""
    attributes = doc.get("attribute")
    if not isinstance(attributes, dict):
        return {}
    return {
        str(aid): a
        for aid, a in attributes.items()
        if isinstance(a, dict) and a.get("anchor_id", _REGION_ANCHOR) == _REGION_ANCHOR
    }


def choose_attribute3(path: Path, doc: dict, attribute: str | None, regions: bool) -> str:
    """The id of the region attribute holding the class: the one named `attribute` (its name
    in VIA), else the only region attribute the project defines.

    Raises:
        SegtoolError: no such attribute, two of that name, or no single one to choose.
    """
    found = _region_attributes(doc)
    names = {aid: str(a.get("aname", aid)) for aid, a in found.items()}
    listed = ", ".join(map(repr, sorted(set(names.values())))) or "none"
    if attribute is not None:
        ids = [aid for aid, name in names.items() if name == attribute]
        if not ids:
            raise SegtoolError(f"{path}: no region attribute {attribute!r}; the file has {listed}")
        if len(ids) > 1:
            raise SegtoolError(
                f"{path}: {len(ids)} region attributes are named {attribute!r} (ids "
                f"{', '.join(ids)}); rename one in VIA"
            )
        return ids[0]
    if not regions:
        return ""  # nothing to classify
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise SegtoolError(
            f"{path}: no region attribute holds a class; add a region attribute such as "
            f"'class' in VIA's attribute editor and set it on every region"
        )
    raise SegtoolError(
        f"{path}: several region attributes could hold the class ({listed}); pick one "
        f"with --via-attribute NAME"
    )


def region_label(definition: dict, value: Any) -> str:
    """The class a region's value of the chosen attribute names.

    Text attributes hold the class; dropdown, radio and checkbox attributes hold option ids
    (a checkbox: ids joined by commas, exactly one ticked), named by the attribute's options.

    Raises:
        ValueError: no value, or one that names no option, saying how to fix it.
    """
    name = definition.get("aname", "?")
    if value is None or value == "":
        raise _RegionError(f"it has no class (attribute {name!r} is not set); set it in VIA")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _RegionError(f"attribute {name!r} holds {value!r}, not a text or an option id")
    if definition.get("type") == _TEXT:
        if not isinstance(value, str):
            raise _RegionError(
                f"attribute {name!r} holds the number {value!r}, not a text; type the class in VIA"
            )
        if not value.strip():
            raise _RegionError(f"it has no class (attribute {name!r} is empty); set it in VIA")
        return canonical_label(value.strip())
    options = definition.get("options")
    options = options if isinstance(options, dict) else {}
    chosen = (
        [v for v in str(value).split(",") if v]
        if definition.get("type") == _CHECKBOX
        else [str(value)]
    )
    if len(chosen) != 1:
        raise _RegionError(
            f"attribute {name!r} has {len(chosen)} options ticked ({value!r}); tick exactly one"
        )
    label = options.get(chosen[0])
    if not isinstance(label, str) or not label.strip():
        raise _RegionError(
            f"attribute {name!r} holds option id {chosen[0]!r}, which is none of its options "
            f"({', '.join(f'{k}={v!r}' for k, v in options.items()) or 'none'}); pick one in VIA"
        )
    return canonical_label(label.strip())


_NOT_IMAGES = (
    "segtool reads VIA 3 image projects (regions drawn on images), not video or audio "
    "annotations; annotate the frames as images"
)


def _check_files(path: Path, doc: dict) -> None:
    """Refuse a project holding anything but images."""
    for fid, entry in doc["file"].items():
        if not isinstance(entry, dict):
            raise SegtoolError(
                f"{path}: file id {fid} is {entry!r}, not an object with fname and type; add "
                f"the file again in VIA"
            )
        kind = entry.get("type")
        if kind != _IMAGE:
            what = _FILE_TYPES.get(kind, f"a file of type {kind!r}")
            name = entry.get("fname")
            raise SegtoolError(f"{path}: file {name!r} (file id {fid}) is {what}; {_NOT_IMAGES}")


def _regions_by_view(path: Path, doc: dict) -> dict[str, list[tuple[str, dict]]]:
    """The metadata entries that are regions, by view id, in file order."""
    views, by_view = doc["view"], {}
    for mid, entry in doc["metadata"].items():
        if not isinstance(entry, dict):
            raise SegtoolError(f"{path}: metadata {mid!r} is not an object; fix or delete it")
        z = entry.get("z")
        if z not in (None, []):
            raise SegtoolError(
                f"{path}: metadata {mid!r} has the time span z = {z!r} (a temporal segment or "
                f"a video frame); {_NOT_IMAGES}"
            )
        vid = entry.get("vid")
        if not isinstance(vid, (str, int)) or isinstance(vid, bool) or str(vid) not in views:
            raise SegtoolError(
                f"{path}: metadata {mid!r} belongs to view {vid!r}, which the project does not "
                f"have; set its vid to one of the views ({', '.join(map(repr, views))}) or "
                f"delete the entry"
            )
        if entry.get("xy") in (None, []):
            continue  # an annotation of the whole image (a caption): no pixels
        by_view.setdefault(str(vid), []).append((str(mid), entry))
    return by_view


def _view_order(path: Path, doc: dict) -> list[str]:
    """Every view id, in the order VIA lists the views."""
    # Projects saved by VIA 3.1.0 keep vid_list at the top level.
    order = doc["project"].get("vid_list", doc.get("vid_list", []))
    if not isinstance(order, list):
        raise SegtoolError(f"{path}: project.vid_list is not a list; save the project again")
    order = [str(v) for v in order]
    return order + [v for v in doc["view"] if v not in order]


def _view_file(path: Path, doc: dict, vid: str) -> dict:
    """The file entry of the one image view `vid` shows."""
    view = doc["view"].get(vid)
    if not isinstance(view, dict):
        raise SegtoolError(
            f"{path}: project.vid_list names view {vid!r}, which the project does not have; "
            f"remove it from vid_list"
        )
    fids = view.get("fid_list")
    if not isinstance(fids, list) or len(fids) != 1:
        count = len(fids) if isinstance(fids, list) else "no list of"
        raise SegtoolError(
            f"{path}: view {vid!r} shows {count} files; segtool reads views of one image "
            f"each (VIA 3's image annotator), not pairs of files"
        )
    entry = doc["file"].get(str(fids[0]))
    if not isinstance(entry, dict):
        raise SegtoolError(
            f"{path}: view {vid!r} shows file id {fids[0]!r}, which the project's file list "
            f"does not have; add the file again in VIA or delete the view"
        )
    return entry


def _image_name(path: Path, vid: str, entry: dict) -> str:
    """The image's path under the image folder: its name, or a URL's or path's last part."""
    loc = entry.get("loc")
    ref = entry.get("fname") if loc in (_LOC_LOCAL, _LOC_INLINE) else entry.get("src")
    ref = ref or entry.get("fname")
    if not isinstance(ref, str) or not ref:
        raise SegtoolError(f"{path}: the file of view {vid!r} has no fname; fix the file")
    text = ref.replace("\\", "/")
    if "://" in text or text.startswith("/") or text[1:2] == ":":
        return basename_of(ref)  # a URL or an absolute path: looked up by its file name
    return ref


def _record(
    path: Path, image_dir: Path, vid: str, entry: dict, regions: list, aid: str, definition: dict
) -> ImageRecord:
    """One view's record: its image and its regions' shapes, or the problem of the first bad one."""
    name = _image_name(path, vid, entry)
    where = f"image {name!r}"
    shapes, problem, image, data = [], None, None, None
    try:
        image = image_in_folder(image_dir, name)
        if entry.get("loc") == _LOC_INLINE:
            data = decode_base64(str(entry.get("src")))
    except PathEscapeError as exc:
        problem, regions = f"{where}: {exc}; {RELATIVE_NAMES}", []
    except ValueError as exc:
        problem, regions = f"{where}: {exc}", []
    for mid, region in regions:
        av = region.get("av")
        try:
            label = region_label(definition, av.get(aid) if isinstance(av, dict) else None)
            shapes.append(region_shape(label, region.get("xy")))
        except _RegionError as exc:
            problem = f"{where}, region {mid!r}: {exc}"
            break
    return ImageRecord(path, name, image, None, None, tuple(shapes), data=data, problem=problem)


def read_via3(
    path: Path, doc: dict, image_dir: Path, attribute: str | None = None
) -> list[ImageRecord]:
    """Read a parsed VIA 3 project into one record per view.

    Args:
        path: the project file (named in messages and records).
        doc: its parsed JSON (`is_via3` holds).
        image_dir: where image names start. A file given by URL or absolute path is looked
            up by its last part; an inline image (VIA's base64 ``src``) is used as is.
        attribute: the name of the region attribute holding the class; default: the only
            region attribute the project defines.

    Returns:
        Records in VIA's view order, shapes in file order; a record's ``problem`` names the
        bad region.

    Raises:
        SegtoolError: a video or audio project, temporal annotations, an entry pointing at a
            view or file the project lacks, two views of one image, or no single class
            attribute.
    """
    _check_files(path, doc)
    regions = _regions_by_view(path, doc)
    aid = choose_attribute3(path, doc, attribute, bool(regions))
    definition = _region_attributes(doc).get(aid, {})
    records, seen = [], {}
    for vid in _view_order(path, doc):
        record = _record(
            path, image_dir, vid, _view_file(path, doc, vid), regions.get(vid, []), aid, definition
        )
        if record.name in seen:
            raise SegtoolError(
                f"{path}: views {seen[record.name]!r} and {vid!r} both show image "
                f"{record.name!r}; two masks cannot share one name, so delete one view"
            )
        seen[record.name] = vid
        records.append(record)
    return records
