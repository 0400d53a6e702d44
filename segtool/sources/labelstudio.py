"""Label Studio JSON export -> per-image records.

Region coordinates are percentages of the image (``original_width``/``original_height``
record the size the annotator saw); rectangles turn about their top-left corner; brush strokes
are Label Studio's own run-length code (the ``rle-pack`` bit stream) of an RGBA picture, whose
alpha channel is the stroke.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from segtool.core.errors import SegtoolError
from segtool.core.limits import size_problem
from segtool.sources.cvat import ellipse_shape, rotated_corners
from segtool.sources.records import (
    ImageRecord,
    JsonFileError,
    basename_of,
    canonical_label,
    finite_number,
    load_json,
)
from segtool.sources.shapes import Shape

#: Result types that are regions, and the value key that holds their labels.
REGION_TYPES = {
    "polygonlabels": "polygonlabels",
    "rectanglelabels": "rectanglelabels",
    "brushlabels": "brushlabels",
    "ellipselabels": "ellipselabels",
    "keypointlabels": "keypointlabels",
}
#: Result types that carry no pixels (choices, text, ratings, relations...).
NON_REGION_TYPES = frozenset(
    {"choices", "textarea", "rating", "relation", "taxonomy", "number", "datetime", "pairwise"}
)
#: Label Studio prefixes uploaded files with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
#: Tolerance for percentages a hair outside 0..100 (floating-point round trips).
_PERCENT_SLACK = 1e-6


class _RegionError(ValueError):
    pass


def is_labelstudio(doc: Any) -> bool:
    """True for a Label Studio JSON export: a list of tasks with ``data`` and annotations (or,
    in a file of tasks to import, pre-annotations: ``predictions``)."""
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(t, dict) and "data" in t for t in doc)
        and any(_KINDS.intersection(t) for t in doc)
    )


def decode_brush_rle(data: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode Label Studio's brush RLE (the ``rle-pack`` bit stream) into its flat values.

    Stream: 32-bit value count, 5-bit word size - 1, four 4-bit run-length widths - 1; then
    blocks: 1 flag bit, 2-bit width selector, a run length - 1; a repeated block holds one
    word, a literal block one word per value. Bits are read most significant first.

    Args:
        data: the stream's bytes, as Label Studio writes them (a list of 0..255).
        size: (width, height) of the image: the stream must hold width x height x 4 values,
            checked before anything is decoded, so a damaged count cannot claim gigabytes.

    Raises:
        ValueError: the stream is cut short, the bytes are not bytes, or it holds another
            number of values than `size` needs.
    """
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in data):
        raise ValueError("the rle holds values outside 0..255")
    raw = np.asarray(data, np.int64).reshape(-1)
    bits = np.unpackbits(raw.astype(np.uint8))
    weights = 1 << np.arange(32, dtype=np.int64)[::-1]
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > bits.size:
            raise ValueError("the rle stream ends early")
        value = int(bits[pos : pos + n] @ weights[32 - n :]) if n else 0
        pos += n
        return value

    total = read(32)
    if size is not None and total != size[0] * size[1] * 4:
        raise ValueError(
            f"it holds {total} values, not {size[0]} x {size[1]} x 4 (RGBA); the size "
            f"disagrees with the image"
        )
    word = read(5) + 1
    widths = [read(4) + 1 for _ in range(4)]
    out = np.zeros(total, np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < total:
        repeated = read(1)
        j = min(total, i + 1 + read(widths[read(2)]))
        if repeated:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def _label(value: dict, kind: str) -> str:
    names = value.get(REGION_TYPES[kind])
    if not isinstance(names, list) or not names:
        raise _RegionError("it has no label; pick one in Label Studio")
    if len(names) > 1 or not isinstance(names[0], str) or not names[0]:
        raise _RegionError(f"it has {len(names)} labels ({names!r}); keep exactly one")
    return canonical_label(names[0])


def _percent(value: dict, *keys: str) -> list[float]:
    out = []
    for key in keys:
        v = value.get(key)
        if not finite_number(v):
            raise _RegionError(f"{key}={v!r} is not a number")
        out.append(float(v))
    return out


def _check_inside(points: list[tuple[float, float]]) -> None:
    for x, y in points:
        if not (-_PERCENT_SLACK <= x <= 100 + _PERCENT_SLACK) or not (
            -_PERCENT_SLACK <= y <= 100 + _PERCENT_SLACK
        ):
            raise _RegionError(
                f"point ({x:g} %, {y:g} %) lies beyond 0..100 % of the image; fix the region"
            )


def _shape(result: dict, width: int, height: int) -> Shape:
    kind, value = result["type"], result.get("value")
    if not isinstance(value, dict):
        raise _RegionError("it has no value")
    label = _label(value, kind)
    sx, sy = width / 100.0, height / 100.0
    if kind == "polygonlabels":
        raw = value.get("points")
        if not isinstance(raw, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(map(finite_number, p)) for p in raw
        ):
            raise _RegionError("points are not a list of [x %, y %]")
        if len(raw) < 3:
            raise _RegionError(f"a polygon needs at least 3 points, got {len(raw)}")
        _check_inside([(p[0], p[1]) for p in raw])
        return Shape(label, "polygon", tuple((p[0] * sx, p[1] * sy) for p in raw))
    if kind == "rectanglelabels":
        x, y, w, h = _percent(value, "x", "y", "width", "height")
        rotation = value.get("rotation", 0) or 0
        if not finite_number(rotation):
            raise _RegionError(f"rotation={rotation!r} is not a number")
        corners = rotated_corners(
            x * sx, y * sy, (x + w) * sx, (y + h) * sy, rotation, (x * sx, y * sy)
        )
        _check_inside([(cx / sx, cy / sy) for cx, cy in corners])
        if rotation % 360 == 0:
            return Shape(label, "rectangle", (corners[0], corners[2]))
        return Shape(label, "oriented_rectangle", corners)
    if kind == "ellipselabels":
        x, y, rx, ry = _percent(value, "x", "y", "radiusX", "radiusY")
        _check_inside([(x - rx, y - ry), (x + rx, y + ry)])
        rotation = value.get("rotation", 0) or 0
        if not finite_number(rotation):
            raise _RegionError(f"rotation={rotation!r} is not a number")
        return ellipse_shape(label, x * sx, y * sy, rx * sx, ry * sy, rotation)
    if kind == "keypointlabels":
        x, y = _percent(value, "x", "y")
        _check_inside([(x, y)])
        return Shape(label, "point", ((x * sx, y * sy),))
    # brushlabels
    if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
        raise _RegionError("a brush region needs value.format 'rle' and a value.rle list")
    try:
        flat = decode_brush_rle(value["rle"], (width, height))
    except ValueError as exc:
        raise _RegionError(f"its brush rle is damaged ({exc})") from exc
    alpha = flat.reshape(height, width, 4)[:, :, 3] > 0
    return Shape(label, "mask", ((0, 0), (width - 1, height - 1)), mask=alpha)


def _object(result: dict, k: int, regions: dict[str, int]) -> int:
    """The object of the `k`-th result: results sharing an ``id`` are one region (Label Studio
    writes one result per control tag of a region), keyed by its first result's position."""
    rid = result.get("id")
    named = isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != ""
    return regions.setdefault(str(rid), k) if named else k


def _image_name(task: dict, image_dir: Path) -> str:
    data = task.get("data")
    ref = data.get("image") if isinstance(data, dict) else None
    if not isinstance(ref, str) and isinstance(data, dict):
        refs = [v for v in data.values() if isinstance(v, str)]
        ref = refs[0] if len(refs) == 1 else None
    if not isinstance(ref, str) or not ref:
        raise _RegionError("its data names no image (expected data.image)")
    name = basename_of(ref)
    if name in ("", ".", ".."):
        raise _RegionError(f"its data.image {ref!r} names no file; point it at the image file")
    match = _UPLOAD_PREFIX.match(name)
    if match and not (image_dir / name).exists() and (image_dir / match[1]).exists():
        name = match[1]  # the file as the user has it, before Label Studio's upload prefix
    return name


#: The keys of a task that hold its regions: annotations (older exports: completions), or
#: only predictions in a file of tasks to import (``segtool predict --as labelstudio``).
_KINDS = frozenset({"annotations", "completions", "predictions"})


def _annotation(task: dict) -> dict:
    """The task's first finished annotation; a task with no annotations key (tasks to
    import) gives its first prediction."""
    annotations = task.get("annotations", task.get("completions", task.get("predictions")))
    done = [
        a
        for a in annotations or []
        if isinstance(a, dict) and not a.get("was_cancelled") and isinstance(a.get("result"), list)
    ]
    if not done:
        raise _RegionError("it has no finished annotation; annotate or delete the task")
    return done[0]


def _read_task(path: Path, task: dict, name: str, where: str, image_dir: Path) -> ImageRecord:
    try:
        results = _annotation(task)["result"]
        size = None
        shapes = []
        regions: dict[str, int] = {}  # region id -> position of its first result
        for k, result in enumerate(results):
            kind = result.get("type") if isinstance(result, dict) else None
            if kind in NON_REGION_TYPES:
                continue
            region = (
                f"region {k} ({result.get('id', '?')!r})"
                if isinstance(result, dict)
                else f"region {k}"
            )
            if kind not in REGION_TYPES:
                raise _RegionError(
                    f"{region}: unknown region type {kind!r}; segtool draws "
                    f"{', '.join(REGION_TYPES)}"
                )
            here = (result.get("original_width"), result.get("original_height"))
            if not all(isinstance(v, int) and finite_number(v) and v > 0 for v in here):
                raise _RegionError(
                    f"{region}: original_width/height {here!r} are not positive whole numbers"
                )
            too_big = size_problem(*here)  # before a brush is decoded at that size
            if too_big:
                raise _RegionError(f"{region}: original size {too_big}")
            if size is not None and here != size:
                raise _RegionError(
                    f"{region}: original size {here[0]} x {here[1]} disagrees with another "
                    f"region's {size[0]} x {size[1]}"
                )
            if result.get("image_rotation"):
                raise _RegionError(
                    f"{region}: drawn on an image rotated in Label Studio's viewer; reset the "
                    f"rotation and re-save the annotation"
                )
            size = here
            try:
                shapes.append(replace(_shape(result, *here), instance=_object(result, k, regions)))
            except _RegionError as exc:
                raise _RegionError(f"{region}: {exc}") from None
    except _RegionError as exc:
        return ImageRecord(path, name, image_dir / name, None, None, problem=f"{where}: {exc}")
    width, height = size if size else (None, None)
    return ImageRecord(path, name, image_dir / name, width, height, tuple(shapes))


def read_labelstudio(path: Path, image_dir: Path | None = None) -> list[ImageRecord]:
    """Read a Label Studio JSON export into one record per task.

    Args:
        path: the exported JSON (a list of tasks).
        image_dir: the folder holding the images; a task's image reference (an upload path or
            URL) is looked up there by file name, without Label Studio's upload prefix if need
            be. Default: the JSON's folder.

    Returns:
        Records with shapes in result order, from each task's first finished annotation, with
        the size the annotator saw (checked against the image later).

    Raises:
        SegtoolError: not a Label Studio export, or two tasks naming one image file.
    """
    image_dir = path.parent if image_dir is None else image_dir
    try:
        doc = load_json(path)
    except JsonFileError as exc:
        raise SegtoolError(f"{path}: {exc}; fix or re-export the file") from exc
    if not is_labelstudio(doc):
        raise SegtoolError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    records, names = [], {}
    for index, task in enumerate(doc):
        where = f"task {task.get('id', index)!r}"
        try:
            name = _image_name(task, image_dir)
        except _RegionError as exc:
            records.append(ImageRecord(path, where, None, None, None, problem=f"{where}: {exc}"))
            continue
        if name in names:
            raise SegtoolError(
                f"{path}: {where} and task {names[name]!r} both name image {name!r}; two masks "
                f"cannot share one name, so delete the duplicate task"
            )
        names[name] = task.get("id", index)
        records.append(_read_task(path, task, name, f"{where}, image {name!r}", image_dir))
    return records
