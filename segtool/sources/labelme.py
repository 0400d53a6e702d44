"""labelme JSON files -> typed shape records, with every check done before anything is drawn."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from segtool.core.constants import IMAGE_SUFFIXES
from segtool.core.images import FORMAT_SUFFIX, ImageReadError, displayed_size, open_image
from segtool.core.names import sibling_note
from segtool.sources.detect import describe_json, sniff_json
from segtool.sources.records import finite_number, is_file
from segtool.sources.shapes import AnnotationError, ImageSource, Shape

if TYPE_CHECKING:
    import numpy as np

#: Shape types labelme writes, with the number of points each needs (min, max; None = any).
SHAPE_POINTS: dict[str, tuple[int, int | None]] = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "oriented_rectangle": (4, 4),
    "mask": (2, 2),
}


@dataclass(frozen=True)
class LabelmeFile:
    """A parsed labelme annotation file."""

    path: Path
    shapes: tuple[Shape, ...]
    image_path: Path | None
    image_data: bytes | None
    image_height: int | None
    image_width: int | None

    @property
    def labels(self) -> set[str]:
        """Every label the file uses."""
        return {shape.label for shape in self.shapes}


_NUMBER_TYPES = (int, float)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_points(raw: Any, where: str) -> tuple[tuple[float, float], ...]:
    # Fast path for well-formed points (the common case): plain type checks, and x * 0.0 == 0
    # holds for every finite number but not for NaN or infinity (an integer too large for a
    # float raises, and the slow path names it). The points keep the JSON's own numbers (int
    # or float), which is what labelme hands to PIL.
    try:
        if isinstance(raw, list) and all(
            type(p) is list
            and len(p) == 2
            and type(p[0]) in _NUMBER_TYPES
            and type(p[1]) in _NUMBER_TYPES
            and p[0] * 0.0 == 0
            and p[1] * 0.0 == 0
            for p in raw
        ):
            return tuple((p[0], p[1]) for p in raw)
    except OverflowError:
        pass
    if not isinstance(raw, list):
        raise AnnotationError(f"{where}: points {raw!r:.60} is not a list of [x, y]; fix the shape")
    points = []
    for point in raw:
        if not (isinstance(point, list) and len(point) == 2 and all(map(_number, point))):
            raise AnnotationError(
                f"{where}: point {point!r:.60} is not a pair of numbers [x, y]; fix the shape"
            )
        if not all(map(finite_number, point)):
            raise AnnotationError(
                f"{where}: point {point!r:.80} is not finite (NaN, infinity or past 1e308); fix "
                f"or delete the shape"
            )
        points.append((point[0], point[1]))
    return tuple(points)


def _decode_mask(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, str):
        raise AnnotationError(f"{where}: a mask shape needs a base64 PNG in its 'mask' field")
    import numpy as np

    try:
        with open_image(base64.b64decode(raw, validate=False)) as patch:
            array = np.asarray(patch)
    except ImageReadError as exc:
        raise AnnotationError(f"{where}: its 'mask' patch: {exc}") from exc
    except (binascii.Error, OSError, ValueError) as exc:
        raise AnnotationError(
            f"{where}: its 'mask' is not a base64 PNG ({exc}); redraw it"
        ) from exc
    if array.ndim != 2:
        raise AnnotationError(
            f"{where}: its 'mask' has shape {array.shape}, expected a one-channel patch; redraw it"
        )
    return array.astype(bool)


def _parse_shape(raw: Any, index: int) -> Shape:
    where = f"shape {index}"
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where} is not an object; fix the JSON")
    label = raw.get("label")
    if not isinstance(label, str) or not label:
        raise AnnotationError(f"{where}: label {label!r} is not a non-empty string; name the shape")
    where = f"shape {index} ({label!r})"
    shape_type = raw.get("shape_type") or "polygon"
    if not isinstance(shape_type, str) or shape_type not in SHAPE_POINTS:
        raise AnnotationError(
            f"{where}: unknown shape_type {shape_type!r}; use one of {', '.join(SHAPE_POINTS)}"
        )
    points = _parse_points(raw.get("points"), where)
    low, high = SHAPE_POINTS[shape_type]
    if len(points) < low or (high is not None and len(points) > high):
        need = f"{low}" if low == high else f"at least {low}"
        raise AnnotationError(
            f"{where}: a {shape_type} needs {need} points, got {len(points)}; "
            f"fix or delete the shape"
        )
    mask = _decode_mask(raw.get("mask"), where) if shape_type == "mask" else None
    group_id = raw.get("group_id")
    if group_id is not None and (not isinstance(group_id, int) or isinstance(group_id, bool)):
        raise AnnotationError(
            f"{where}: group_id {group_id!r} is not a whole number or null; fix the shape"
        )
    return Shape(label=label, shape_type=shape_type, points=points, mask=mask, group_id=group_id)


#: Shape types whose checks `_plain_shapes` makes for a whole file at once (not ``mask``,
#: whose patch is decoded shape by shape).
_PLAIN_KINDS = frozenset(SHAPE_POINTS) - {"mask"}
_NUMBERS = frozenset(_NUMBER_TYPES)
_DICT, _LIST, _STR, _PAIR = frozenset([dict]), frozenset([list]), frozenset([str]), frozenset([2])
_GROUP_TYPES = frozenset([type(None), int])


def _parse_shapes(raws: list) -> tuple[Shape, ...]:
    """Every shape of a file, checked: all at once where the file is the common case
    (`_plain_shapes`), else shape by shape, which names what is wrong."""
    plain = _plain_shapes(raws)
    if plain is not None:
        return plain
    return tuple(_parse_shape(raw, i) for i, raw in enumerate(raws))


def _plain_shapes(raws: list) -> tuple[Shape, ...] | None:
    """`_parse_shape` of every shape, or None where any shape is not plain: a mask, or
    anything `_parse_shape` would refuse (or accept only after a closer look).

    The checks run over the whole file at once, as C loops over all labels, types, points
    and coordinates (``set(map(type, ...))``), instead of one Python test per point; a sum of
    finite numbers is finite, so one sum tells that no coordinate is NaN or infinite.
    """
    if not set(map(type, raws)) <= _DICT:
        return None
    labels = [raw.get("label") for raw in raws]
    kinds = [raw.get("shape_type") or "polygon" for raw in raws]
    points = [raw.get("points") for raw in raws]
    groups = [raw.get("group_id") for raw in raws]
    if not (
        set(map(type, labels)) <= _STR
        and "" not in labels
        and set(map(type, kinds)) <= _STR
        and set(kinds) <= _PLAIN_KINDS
        and set(map(type, points)) <= _LIST
        and set(map(type, groups)) <= _GROUP_TYPES
    ):
        return None
    for kind, n in zip(kinds, map(len, points), strict=True):
        low, high = SHAPE_POINTS[kind]
        if n < low or (high is not None and n > high):
            return None
    pairs = list(chain.from_iterable(points))
    if not (set(map(type, pairs)) <= _LIST and set(map(len, pairs)) <= _PAIR):
        return None
    coordinates = list(chain.from_iterable(pairs))
    if not set(map(type, coordinates)) <= _NUMBERS:
        return None
    try:
        # Summed as floats: a huge integer raises even when another cancels it exactly.
        if not math.isfinite(sum(coordinates, 0.0)):
            return None  # a NaN or infinity (or finite numbers whose sum overflows)
    except OverflowError:
        return None  # an integer too large for a float
    return tuple(
        Shape(label=label, shape_type=kind, points=tuple(map(tuple, xy)), group_id=group)
        for label, kind, xy, group in zip(labels, kinds, points, groups, strict=True)
    )


def parse_labelme(path: Path) -> LabelmeFile:
    """Read and check one labelme JSON file.

    Raises:
        AnnotationError: the file is not valid JSON, not a labelme file, or has a bad shape.
    """
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read the file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); fix the file"
        ) from exc
    except RecursionError as exc:
        raise AnnotationError("JSON nested too deeply to be an annotation; fix the file") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        found = sniff_json(doc)
        if found is not None:
            raise AnnotationError(
                f'not a labelme file (no "shapes" list) but a {found} export; convert it on its '
                f"own: segtool rasterize {path} OUT --format {found}"
            )
        raise AnnotationError(
            f'not a labelme file (no "shapes" list): {describe_json(doc)}; pass a folder of '
            f"labelme JSON files, or one COCO, CVAT, VIA or Label Studio export file"
        )
    shapes = _parse_shapes(doc["shapes"])
    image_data = None
    if doc.get("imageData"):
        try:
            image_data = base64.b64decode(doc["imageData"], validate=False)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise AnnotationError(
                f"imageData is not valid base64 ({exc}); re-save in labelme"
            ) from exc
    image_path = None
    if isinstance(doc.get("imagePath"), str) and doc["imagePath"]:
        # labelme on Windows writes backslashes; they are separators, not file name characters.
        relative = PureWindowsPath(doc["imagePath"]).as_posix()
        image_path = path.parent / relative
    sizes = []
    for key in ("imageHeight", "imageWidth"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise AnnotationError(f"{key} {value!r} is not a whole number; fix or remove it")
        sizes.append(value)
    return LabelmeFile(
        path=path,
        shapes=shapes,
        image_path=image_path,
        image_data=image_data,
        image_height=sizes[0],
        image_width=sizes[1],
    )


def resolve_image(ann: LabelmeFile) -> ImageSource:
    """Find the image of an annotation: ``imageData`` when present (as labelme does), else
    ``imagePath`` relative to the JSON; check the JSON's recorded size against it.

    Raises:
        AnnotationError: no image, an unreadable one, or a size that disagrees with the JSON.
    """
    path = ann.image_path
    usable_path = path is not None and is_file(path) and path.resolve() != ann.path.resolve()
    try:
        if ann.image_data is not None:
            width, height, fmt = displayed_size(ann.image_data)
            source = ImageSource(
                width, height, None, ann.image_data, FORMAT_SUFFIX.get(fmt, ".img")
            )
            if usable_path:
                try:
                    if displayed_size(path)[:2] == (width, height):
                        source = ImageSource(width, height, path, None, path.suffix)
                except ImageReadError:
                    pass  # the embedded copy is the image; a broken file beside it is not used
        elif path is None:
            raise AnnotationError(
                "no imagePath and no imageData; re-save the file in labelme with its image"
            )
        elif not usable_path:
            raise AnnotationError(
                f"image {path} not found and the JSON has no imageData; put the image at "
                f"that path or re-save in labelme with 'Save With Image Data'{sibling_note(path)}"
            )
        else:
            width, height, _ = displayed_size(path)
            source = ImageSource(width, height, path, None, path.suffix)
    except ImageReadError as exc:
        where = "imageData" if ann.image_data is not None else f"image {path}"
        raise AnnotationError(f"{where}: {exc}; re-export the image") from exc
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        what = f"image {source.file}" if source.file is not None else "imageData"
        raise AnnotationError(
            f"{what}: {source.suffix or 'no suffix'} is not an image format segtool datasets "
            f"hold ({', '.join(IMAGE_SUFFIXES)}); convert it to PNG and point imagePath at it"
        )
    recorded = (ann.image_height, ann.image_width)
    if any(v is not None for v in recorded) and recorded != (source.height, source.width):
        raise AnnotationError(
            f"imageHeight x imageWidth {ann.image_height} x {ann.image_width} disagrees with the "
            f"image, {source.height} x {source.width} as displayed (EXIF orientation applied); "
            f"fix imageHeight/imageWidth or re-open the file in labelme"
        )
    return source
