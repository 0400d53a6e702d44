"""A slow, independent drawing reference for the export-format tests.

labelme's own method: every region on its own full-size canvas (PIL, fill and outline), then
``mask[canvas > 0] = value`` in drawing order. The test files parse each format themselves
(stdlib XML / JSON walking) and describe regions in these plain terms.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def region_canvas(kind: str, params, height: int, width: int) -> np.ndarray:
    """One region drawn alone, as a boolean array."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon":
        draw.polygon([tuple(p) for p in params], fill=1, outline=1)
    elif kind == "box":  # (x1, y1, x2, y2, degrees clockwise, pivot)
        x1, y1, x2, y2, degrees, (px, py) = params
        if degrees % 360 == 0:
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], fill=1, outline=1)
        else:
            t = math.radians(degrees)
            corners = []
            for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2)):
                dx, dy = x - px, y - py
                corners.append(
                    (
                        px + dx * math.cos(t) - dy * math.sin(t),
                        py + dx * math.sin(t) + dy * math.cos(t),
                    )
                )
            draw.polygon(corners, fill=1, outline=1)
    elif kind == "polyline":
        draw.line([tuple(p) for p in params], fill=1, width=10, joint="curve")
    elif kind == "point":
        x, y = params
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=1, outline=1)
    elif kind == "circle":
        cx, cy, r = params
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    elif kind == "ellipse":
        cx, cy, rx, ry = params
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1, outline=1)
    elif kind == "patch":  # (left, top, boolean array): pixel by pixel, clipped
        left, top, patch = params
        out = np.zeros((height, width), bool)
        for r, c in zip(*np.nonzero(patch), strict=True):
            if 0 <= top + r < height and 0 <= left + c < width:
                out[top + r, left + c] = True
        return out
    else:
        raise ValueError(kind)
    return np.asarray(canvas, dtype=bool)


def composite(regions, height: int, width: int) -> np.ndarray:
    """``regions``: (kind, params, value) in drawing order -> the label mask."""
    mask = np.zeros((height, width), np.uint8)
    for kind, params, value in regions:
        mask[region_canvas(kind, params, height, width)] = value
    return mask
