"""Shapes -> label arrays, drawn as labelme draws them.

labelme draws each shape onto its own full-size canvas and then assigns the class id where
that canvas is set. Drawing every shape straight onto one canvas with its class id as the ink
sets exactly the same pixels (PIL's primitives do not blend, and later shapes overwrite
earlier ones in both), at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from segtool.core.constants import IGNORE_LABEL, LINE_WIDTH, POINT_RADIUS
from segtool.core.masks import MaskRows
from segtool.sources.labelme import Shape

if TYPE_CHECKING:
    import numpy as np


def _draw_shape(draw: ImageDraw.ImageDraw, canvas: Image.Image, shape: Shape, value: int) -> None:
    """Draw one shape with labelme's primitive and arguments, in ink `value`."""
    xy = list(shape.points)
    kind = shape.shape_type
    if kind == "rectangle":
        (x1, y1), (x2, y2) = xy
        draw.rectangle(
            [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], fill=value, outline=value
        )
    elif kind == "circle":
        (cx, cy), (px, py) = xy
        try:
            d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)  # labelme's formula, to the last bit
        except OverflowError:  # a radius past 1e154: PIL draws nothing for it, as for 1e12
            d = math.inf
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], fill=value, outline=value)
    elif kind == "line":
        draw.line(xy, fill=value, width=LINE_WIDTH)
    elif kind == "linestrip":
        draw.line(xy, fill=value, width=LINE_WIDTH, joint="curve")
    elif kind == "point":
        (cx, cy), r = xy[0], POINT_RADIUS
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value, outline=value)
    elif kind == "ellipse":  # CVAT, VIA and Label Studio ellipses: the bounding box's corners
        (x1, y1), (x2, y2) = xy
        draw.ellipse([x1, y1, x2, y2], fill=value, outline=value)
    elif kind == "mask":
        _paste_patch(canvas, shape, value)
    else:  # polygon, oriented_rectangle
        draw.polygon(xy, fill=value, outline=value)


def _paste_patch(canvas: Image.Image, shape: Shape, value: int) -> None:
    """Paint a mask shape: patch top-left at the first point (rounded half-to-even), clipped."""
    import numpy as np

    patch = shape.mask
    assert patch is not None  # parse_labelme guarantees it for mask shapes
    (x1, y1), (x2, y2) = shape.points
    left, top = (int(v) for v in np.round([x1, y1]))
    if all(float(v).is_integer() for v in (x1, y1, x2, y2)):
        # Legacy files store the patch's last pixel as the second point.
        patch = patch[: max(int(y2) - int(y1) + 1, 0), : max(int(x2) - int(x1) + 1, 0)]
    width, height = canvas.size
    x0, y0 = max(left, 0), max(top, 0)
    x_end, y_end = min(left + patch.shape[1], width), min(top + patch.shape[0], height)
    if x_end <= x0 or y_end <= y0:
        return
    window = patch[y0 - top : y_end - top, x0 - left : x_end - left]
    ink = Image.fromarray(window.astype(np.uint8) * 255, mode="L")
    canvas.paste(value, (x0, y0, x_end, y_end), mask=ink)


def draw_shapes(
    shapes: Iterable[Shape],
    height: int,
    width: int,
    value_of: dict[str, int],
    *,
    wide: bool = False,
) -> np.ndarray:
    """Rasterize shapes in order onto one canvas: pixel = value of the last shape covering it.

    Args:
        shapes: labelme shapes, in JSON order.
        height: canvas height in pixels.
        width: canvas width in pixels.
        value_of: label -> pixel value (class id, or the ignore value for ``__ignore__``).
        wide: draw on a 32-bit canvas and return uint16 (for more than 255 classes).

    Returns:
        An ``(height, width)`` uint8 (uint16 when `wide`) label array; 0 where nothing is drawn.

    Raises:
        KeyError: a label is missing from `value_of`.
    """
    return draw_ids(((shape, value_of[shape.label]) for shape in shapes), height, width, wide=wide)


def draw_canvas(
    shapes: Iterable[Shape],
    height: int,
    width: int,
    value_of: dict[str, int],
    *,
    wide: bool = False,
) -> Image.Image:
    """`draw_shapes` as the PIL canvas itself (mode ``L``; ``I`` when `wide`), which is saved
    and counted without copying it into an array.

    Raises:
        KeyError: a label is missing from `value_of`.
    """
    return draw_inked(
        ((shape, value_of[shape.label]) for shape in shapes), height, width, wide=wide
    )


def draw_inked(
    inked: Iterable[tuple[Shape, int]], height: int, width: int, *, wide: bool = False
) -> Image.Image:
    """Draw (shape, ink) pairs in order onto one canvas (mode ``L``; ``I`` when `wide`): the one
    drawing loop behind class masks and instance masks, so both set the same pixels."""
    canvas = Image.new("I" if wide else "L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    columns = None  # the canvas transposed, while COCO shapes are painted
    for shape, value in inked:
        if shape.shape_type == "coco":
            # COCO masks are pycocotools' runs down the columns: painted as slices of the
            # transposed canvas. The canvas moves between PIL and numpy only where kinds
            # alternate (a COCO file has one kind).
            import numpy as np

            from segtool.sources.coco import paint_coco

            if columns is None:
                columns = np.asarray(canvas).T.copy()  # C order: columns are contiguous
            paint_coco(columns, shape, value)
            continue
        if columns is not None:
            canvas, columns = _from_columns(columns), None
            draw = ImageDraw.Draw(canvas)
        _draw_shape(draw, canvas, shape, value)
    return canvas if columns is None else _from_columns(columns)


def draw_rows(
    shapes: Iterable[Shape], height: int, width: int, value_of: dict[str, int]
) -> MaskRows:
    """`draw_canvas`'s 8-bit pixels, drawn straight into their PNG rows (`MaskRows`), so the
    mask is encoded and counted without a copy.

    Raises:
        KeyError: a label is missing from `value_of`.
    """
    shapes = tuple(shapes)
    buffer = bytearray(height * (width + 1) + 1)  # + 1: the canvas starts at byte 1
    canvas = _canvas_over(buffer, width, height)
    if canvas is not None and not any(shape.shape_type == "coco" for shape in shapes):
        core = canvas.im
        draw = ImageDraw.Draw(canvas)
        for shape in shapes:
            _draw_shape(draw, canvas, shape, value_of[shape.label])
        if canvas.im is core:  # drawn into `buffer`, not into a copy PIL made of it
            return MaskRows(memoryview(buffer)[:-1], width, height)
    return MaskRows.of_image(draw_canvas(shapes, height, width, value_of))


def _canvas_over(buffer: bytearray, width: int, height: int) -> Image.Image | None:
    """An 8-bit canvas whose pixels are those of the PNG rows in `buffer` (row y, pixel x at
    byte ``1 + y * (width + 1) + x``), or None where this Pillow cannot draw into it."""
    if not width or not height:
        return None
    view = memoryview(buffer)[1:]
    canvas = Image.frombuffer("L", (width, height), view, "raw", "L", width + 1, 1)
    # frombuffer marks the image read-only to protect the caller's bytes; drawing into them
    # is the point here (PIL's own core still refuses a buffer that is not writable).
    canvas.readonly = 0
    buffer[1] = 1  # the canvas must share the buffer's memory, not hold a copy of it
    shared = canvas.getpixel((0, 0)) == 1
    buffer[1] = 0
    return canvas if shared and not canvas.readonly else None


def _from_columns(columns: np.ndarray) -> Image.Image:
    """The PIL canvas of a transposed label array."""
    import numpy as np

    return Image.fromarray(np.ascontiguousarray(columns.T))


def draw_multilabel(
    shapes: Iterable[Shape], height: int, width: int, class_of: dict[str, int], num_foreground: int
) -> np.ndarray:
    """Rasterize shapes into a multi-label mask: each class's plane is the union of its shapes.

    Each class's shapes are drawn with the same primitives as `draw_shapes` onto a canvas of
    their own, so every plane equals the union of labelme's per-shape masks; ``__ignore__``
    shapes set the ignore bit.

    Args:
        shapes: labelme shapes (their order does not matter: nothing is overwritten).
        height: canvas height in pixels.
        width: canvas width in pixels.
        class_of: label -> class id (1..K-1).
        num_foreground: K-1, which sets the value type (`segtool.core.multilabel`).

    Returns:
        An ``(height, width)`` array of bit values (uint8, uint16 or uint64).

    Raises:
        KeyError: a label is missing from `class_of`.
    """
    import numpy as np

    from segtool.core.multilabel import ignore_value, value_dtype

    dtype = value_dtype(num_foreground)
    by_bit: dict[int, list[Shape]] = {}
    top = ignore_value(num_foreground).bit_length() - 1
    for shape in shapes:
        bit = top if shape.label == IGNORE_LABEL else class_of[shape.label] - 1
        by_bit.setdefault(bit, []).append(shape)
    values = np.zeros((height, width), dtype=dtype)
    for bit, group in by_bit.items():
        # 8-bit masks take the bit itself as ink; deeper ones shift a 0/1 canvas into place.
        if dtype == np.uint8:
            values |= np.asarray(_canvas(group, height, width, 1 << bit))
        else:
            plane = np.asarray(_canvas(group, height, width, 1))
            values |= plane.astype(dtype) << dtype.type(bit)
    return values


def _canvas(shapes: list[Shape], height: int, width: int, ink: int) -> Image.Image:
    """An 8-bit canvas with `shapes` drawn in `ink`, by `draw_canvas` (every source's kinds)."""
    return draw_canvas(shapes, height, width, {shape.label: ink for shape in shapes})


def draw_instances(
    shapes: Iterable[Shape], height: int, width: int
) -> tuple[np.ndarray, list[tuple[str, int | None]]]:
    """Rasterize shapes into an instance mask, as labelme's ``labelme2voc`` SegmentationObject.

    Objects are numbered 1, 2, ... in order of first appearance; shapes with the same label and
    the same ``group_id`` are one object, a shape without ``group_id`` is an object of its own.
    Later shapes overwrite earlier ones, and pixels whose last shape is ``__ignore__`` are 0
    (the ignore shape still takes a number, as in labelme).

    Returns:
        (uint8 ids, or uint16 when there are more than 255 objects; the (label, group_id) of
        each object, index i being object i+1).

    Raises:
        ValueError: more than 65535 objects in one image.
    """
    objects: list[tuple[str, int | None]] = []
    numbers: dict[tuple, int] = {}
    inks = []
    for index, shape in enumerate(shapes):
        # A shape without group_id is its own object (labelme gives it a fresh uuid).
        key = (shape.label, shape.group_id) if shape.group_id is not None else (shape.label, index)
        key = (*key, shape.group_id is None)
        if key not in numbers:
            objects.append((shape.label, shape.group_id))
            numbers[key] = len(objects)
        inks.append((shape, 0 if shape.label == IGNORE_LABEL else numbers[key]))
    if len(objects) > 65535:
        raise ValueError(f"{len(objects)} objects do not fit a 16-bit instance mask (65535)")
    return draw_ids(inks, height, width, wide=len(objects) > 255), objects


def draw_ids(
    inked: Iterable[tuple[Shape, int]], height: int, width: int, *, wide: bool
) -> np.ndarray:
    """`draw_inked` as an id array: uint8, or uint16 when `wide` (an instance mask)."""
    import numpy as np

    array = np.asarray(draw_inked(inked, height, width, wide=wide))
    return array.astype(np.uint16) if wide else array
