"""Shapes -> label arrays, drawn as labelme draws them.

labelme draws each shape onto its own full-size canvas and then assigns the class id where
that canvas is set. Drawing every shape straight onto one canvas with its class id as the ink
sets exactly the same pixels (PIL's primitives do not blend, and later shapes overwrite
earlier ones in both), at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from segtool.core.constants import LINE_WIDTH, POINT_RADIUS
from segtool.sources.labelme import Shape

#: How the original images reach ``dataset/images``.
IMAGE_MODES = ("copy", "link", "none")


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
        d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], fill=value, outline=value)
    elif kind == "line":
        draw.line(xy, fill=value, width=LINE_WIDTH)
    elif kind == "linestrip":
        draw.line(xy, fill=value, width=LINE_WIDTH, joint="curve")
    elif kind == "point":
        (cx, cy), r = xy[0], POINT_RADIUS
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value, outline=value)
    elif kind == "mask":
        _paste_patch(canvas, shape, value)
    else:  # polygon, oriented_rectangle
        draw.polygon(xy, fill=value, outline=value)


def _paste_patch(canvas: Image.Image, shape: Shape, value: int) -> None:
    """Paint a mask shape: patch top-left at the first point (rounded half-to-even), clipped."""
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
    canvas = Image.new("I" if wide else "L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        _draw_shape(draw, canvas, shape, value_of[shape.label])
    array = np.asarray(canvas)
    return array.astype(np.uint16) if wide else array
