"""COCO instances JSON -> per-image records, drawn through pycocotools itself.

pycocotools is the format's reference: its polygon rasterisation is not PIL's, and masks must
match the loop every COCO user knows, image by image::

    mask = zeros; for ann in annotations (file order): mask[annToMask(ann) > 0] = id

Everything is checked here, before anything is drawn: pycocotools itself reads past its
buffers on an RLE whose counts do not add up to the image, and takes a two-point "polygon" for
a box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segtool.core.constants import IGNORE_LABEL
from segtool.core.errors import SegtoolError
from segtool.sources.records import (
    ImageRecord,
    JsonFileError,
    PathEscapeError,
    RleShape,
    canonical_label,
    finite_number,
    image_in_folder,
    json_text,
    load_json,
)
from segtool.sources.shapes import far_vertex

#: How ``iscrowd: 1`` regions are painted: the ignore value (COCO scores nothing there) or
#: their category's class.
CROWD_MODES = ("ignore", "class")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The key of a list or object id: it matches no image or category.
_NO_MATCH = object()


def _key(value: Any) -> Any:
    """An id as a table key; a list or object (which JSON allows) matches nothing."""
    return _NO_MATCH if isinstance(value, (list, dict)) else value


def rle_counts(counts: str | bytes) -> np.ndarray:
    """The run lengths in a compressed COCO RLE string, decoded all at once.

    pycocotools' code: each number is written 5 bits a character (character - 48), least
    significant first; bit 0x20 says another character follows; bit 0x10 of the last one is
    the sign. From the third number on, each is stored as its difference from the number two
    places before it.

    Raises:
        ValueError: a character outside the code's alphabet, a number cut short, a number too
            long to be a run, or a negative run.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() >= 64:
        raise ValueError("a character is not part of COCO's RLE code")
    ends = np.flatnonzero(c < 0x20)  # the last character of each number
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ValueError("the counts string ends inside a number")
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ValueError("a number is longer than any run")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    runs = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    runs[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs[3::2] = np.cumsum(runs[1::2])[1:]  # odd runs from the fourth number on
    runs[2::2] = np.cumsum(runs[2::2])  # even runs from the third number on
    if runs.min() < 0:
        raise ValueError("a run has negative length")
    return runs


def check_segmentation(segm: Any, height: int, width: int) -> str | None:
    """What is wrong with one annotation's ``segmentation`` for an image of this size, if anything.

    Returns:
        None when pycocotools can draw it exactly, else the problem and its fix.
    """
    if isinstance(segm, list):
        if not segm:
            return (
                "has an empty segmentation (a box-only annotation); segtool needs polygons or RLE"
            )
        for j, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(finite_number(v) for v in poly):
                return f"polygon {j} is not a flat list of finite numbers [x1, y1, x2, y2, ...]"
            if len(poly) % 2:
                return f"polygon {j} has an odd number of coordinates ({len(poly)}); fix it"
            if len(poly) < 6:
                return f"polygon {j} has {len(poly) // 2} point(s); a polygon needs at least 3"
            far = far_vertex(zip(poly[0::2], poly[1::2], strict=True), width, height)
            if far:
                return f"polygon {j}: {far}"
        return None
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        return "segmentation is neither a list of polygons nor an RLE {size, counts}"
    size = segm["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(map(_whole, size))):
        return f"RLE size {size!r} is not [height, width]"
    if size != [height, width]:
        return (
            f"RLE size {size[0]} x {size[1]} disagrees with the image, {height} x {width}; "
            f"re-export the annotation with the image's size"
        )
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(_whole(c) and c >= 0 for c in counts):
            return "uncompressed RLE counts must be non-negative whole numbers"
        total = sum(counts)
    elif isinstance(counts, str):
        try:
            total = int(rle_counts(counts).sum())
        except ValueError as exc:
            return f"compressed RLE counts are damaged ({exc})"
    else:
        return "RLE counts must be a list of numbers or a compressed string"
    if total != height * width:
        return (
            f"RLE counts add up to {total} pixels, not the image's {height} x {width} = "
            f"{height * width}; the RLE is damaged"
        )
    return None


def coco_runs(segm: Any, height: int, width: int) -> np.ndarray:
    """One annotation's mask as run lengths down the columns, background first: the mask
    ``COCO.annToMask`` decodes. Polygons are rasterised by pycocotools itself (``frPyObjects``
    and ``merge``, as ``annToRLE`` does)."""
    if isinstance(segm, list):
        from pycocotools import mask as mask_utils

        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        return rle_counts(rle["counts"])
    if isinstance(segm["counts"], list):
        return np.asarray(segm["counts"], np.int64)
    return rle_counts(segm["counts"])


def _read_json(path: Path) -> Any:
    try:
        return load_json(path)
    except JsonFileError as exc:
        raise SegtoolError(f"{path}: {exc}; fix or re-export the file") from exc


def _image_table(path: Path, doc: dict, image_dir: Path) -> tuple[dict, list[ImageRecord]]:
    """id -> image entry (a dict with the record's fields), plus records for broken entries."""
    images: dict[Any, dict] = {}
    broken: list[ImageRecord] = []
    names: dict[str, Any] = {}
    for i, entry in enumerate(doc["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise SegtoolError(f"{path}: images[{i}] has no file_name; fix the export")
        name, iid = entry["file_name"], entry.get("id")
        where = f"image {name!r} (id {iid!r})"
        if not isinstance(iid, (int, str)) or isinstance(iid, bool) or iid in images:
            raise SegtoolError(f"{path}: {where}: its id is missing or used twice; fix the export")
        if name in names:
            raise SegtoolError(
                f"{path}: {where}: the same file_name as image id {names[name]!r}; two masks "
                f"cannot share one name, so merge or rename the entries"
            )
        names[name] = iid
        width, height = entry.get("width"), entry.get("height")
        problem = None
        if not (_whole(width) and _whole(height) and width > 0 and height > 0):
            problem = f"width x height {width!r} x {height!r} are not positive whole numbers"
        try:
            image = image_in_folder(image_dir, name)
        except PathEscapeError as exc:
            image, problem = None, f"{exc}; file_name must be relative to the image folder"
        images[iid] = {
            "name": name,
            "image": image,
            "width": width,
            "height": height,
            "problem": problem,
            "shapes": [],
            "where": where,
        }
    return images, broken


def _categories(path: Path, doc: dict) -> dict[Any, str]:
    """Category id -> class name.

    Raises:
        SegtoolError: a category without a name, with a list or object id, or an id used twice.
    """
    categories: dict[Any, str] = {}
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str) or not cat["name"]:
            raise SegtoolError(f"{path}: categories[{i}] has no name; fix the export")
        cid = cat.get("id")
        if isinstance(cid, (list, dict)):
            raise SegtoolError(
                f"{path}: categories[{i}] ({cat['name']!r}) has the id {cid!r}; a category id "
                f"is a number, so fix the export"
            )
        if cid in categories:
            raise SegtoolError(f"{path}: category id {cid!r} is used twice; fix it")
        categories[cid] = canonical_label(cat["name"])
    return categories


def _annotation_problem(ann: dict, label: str | None, categories: dict, entry: dict) -> str | None:
    """What is wrong with one annotation of an image entry, if anything."""
    is_crowd = ann.get("iscrowd", 0)
    if label is None:
        cid = ann.get("category_id")
        alike = [
            f" (the category's id is {k!r}: a number and a string differ)"
            for k in categories
            if str(k) == str(cid)
        ]
        return (
            f"category_id {cid!r} matches no category{''.join(alike[:1])}; add it "
            f'to "categories" or fix the annotation'
        )
    if is_crowd not in (0, 1):  # JSON's true and false too, as COCO Annotator writes them
        return f"iscrowd {json_text(is_crowd)} is not 0 or 1 (or false or true)"
    return check_segmentation(ann.get("segmentation"), entry["height"], entry["width"])


def read_coco(
    path: Path, image_dir: Path | None = None, *, crowd: str = "ignore"
) -> list[ImageRecord]:
    """Read a COCO instances JSON file into one record per image (in the file's image order).

    Args:
        path: the ``instances_*.json`` file.
        image_dir: where ``file_name`` paths start; default: the JSON file's folder.
        crowd: ``ignore`` paints ``iscrowd: 1`` regions with the ignore value, ``class`` with
            their category.

    Returns:
        Records whose shapes are `RleShape` (label = category name, or ``__ignore__`` for crowd
        regions painted as ignore), in annotation file order. A record's ``problem`` says what
        is wrong with that image's annotations; annotations naming no image come back as
        records without an image.

    Raises:
        SegtoolError: the file is not a COCO instances file, or an image entry is unusable
            (missing id or file_name, duplicate file names).
    """
    if crowd not in CROWD_MODES:
        raise SegtoolError(f"crowd mode {crowd!r} is not one of {', '.join(CROWD_MODES)}")
    image_dir = path.parent if image_dir is None else image_dir
    doc = _read_json(path)
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise SegtoolError(
            f'{path}: not a COCO instances file (needs "images", "annotations" and '
            f'"categories" lists)'
        )
    categories = _categories(path, doc)
    images, records = _image_table(path, doc, image_dir)
    orphans: dict[str, tuple[Any, list[str]]] = {}  # by the image_id's repr
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise SegtoolError(f"{path}: annotations[{i}] is not an object; fix the export")
        where = f"annotation {ann.get('id', i)!r}"
        entry = images.get(_key(ann.get("image_id")))
        if entry is None:
            value = ann.get("image_id")
            orphans.setdefault(repr(value), (value, []))[1].append(where)
            continue
        if entry["problem"]:
            continue
        label = categories.get(_key(ann.get("category_id")))
        is_crowd = ann.get("iscrowd", 0)
        problem = _annotation_problem(ann, label, categories, entry)
        if problem:
            entry["problem"] = f"{where}: {problem}"
            continue
        if is_crowd and crowd == "ignore":
            label = IGNORE_LABEL
        shape = RleShape(label, "coco", (), segmentation=ann["segmentation"], crowd=bool(is_crowd))
        entry["shapes"].append(shape)
    for iid, (value, wheres) in orphans.items():
        more = f" (and {len(wheres) - 1} more)" if len(wheres) > 1 else ""
        alike = [k for k in images if str(k) == str(value)]
        hint = f" (image {alike[0]!r}: a number and a string differ)" if alike else ""
        records.append(
            ImageRecord(
                export=path,
                name=f"image_id {iid}",
                image=None,
                width=None,
                height=None,
                problem=f'{wheres[0]}{more}: image_id {iid} matches no entry in "images"{hint}; '
                f"add the image or delete the annotation",
            )
        )
    records[:0] = [
        ImageRecord(
            export=path,
            name=e["name"],
            image=e["image"],
            width=e["width"],
            height=e["height"],
            shapes=tuple(e["shapes"]),
            problem=f"{e['where']}: {e['problem']}" if e["problem"] else None,
        )
        for e in images.values()
    ]
    return records


def paint_coco(columns: np.ndarray, shape: RleShape, value: int) -> None:
    """Set ``mask[annToMask(ann) > 0] = value`` for one COCO shape, in place.

    Args:
        columns: the label mask so far, transposed: a C-contiguous ``(width, height)`` array,
            so that COCO's column-major runs are contiguous slices of it.
        shape: a shape read by `read_coco` (checked against this size).
        value: the pixel value to paint.
    """
    width, height = columns.shape
    runs = coco_runs(shape.segmentation, height, width)
    last = runs.size - 1 if runs.size % 2 == 0 else runs.size - 2  # the last foreground run
    if last < 1:
        return
    ends = np.cumsum(runs[: last + 1])
    # From the first foreground pixel to the last: runs alternate foreground, background...
    inside = np.repeat(np.arange(last) % 2 == 0, runs[1 : last + 1])
    flat = columns.reshape(-1)  # a view: `columns` is C-contiguous
    flat[int(ends[0]) : int(ends[last])][inside] = value
