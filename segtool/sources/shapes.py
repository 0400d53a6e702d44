"""What every annotation reader returns: `Shape` records, where the image is, and the error
a malformed file raises. The rasterizer draws these, whatever format they came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class AnnotationError(ValueError):
    """An annotation file is malformed; the message says what and how to fix it (no file name)."""


@dataclass(frozen=True)
class Shape:
    """One shape: its label, type (labelme's names: polygon, rectangle, circle, line, linestrip,
    point, oriented_rectangle, mask), points in pixels as the file wrote them, for a ``mask``
    shape its boolean patch, and the ``group_id`` that joins shapes into one object.

    ``instance`` is set by export readers whose objects span several shapes (a CVAT group or
    ``<points>`` element, a Label Studio region id): the file position of the object's first
    element, shared by all its shapes. None: the shape is an object of its own."""

    label: str
    shape_type: str
    points: tuple[tuple[float, float], ...]
    mask: np.ndarray | None = None
    group_id: int | None = None
    instance: int | None = None

    def inside(self, width: int, height: int) -> bool:
        """True when every point lies on the image (no clipping happens)."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs) >= 0 and min(ys) >= 0 and max(xs) <= width - 1 and max(ys) <= height - 1


#: How far beyond the image's edges a vertex may lie, in image sizes (and at least `MIN_REACH`
#: pixels), in every format. Further out, the coordinates are damage, not annotation: PIL draws
#: a vertex past 2**31 pixels as the mirror image of the region (its C ints wrap around), and
#: pycocotools walks every edge at 5x resolution in C ints (a crash, or all the memory).
REACH, MIN_REACH = 4, 1024


def reach(width: int, height: int) -> int:
    """How many pixels beyond the edges of a `width` x `height` image a vertex may lie."""
    return max(MIN_REACH, REACH * max(width, height))


def far_vertex(points: Iterable[tuple[float, float]], width: int, height: int) -> str | None:
    """The first vertex too far outside a `width` x `height` image to be drawn, said with its
    value and the fix; None when every vertex lies within `reach` of the image."""
    limit = reach(width, height)
    for x, y in points:
        if not (-limit <= x <= width - 1 + limit and -limit <= y <= height - 1 + limit):
            return (
                f"vertex ({x:g}, {y:g}) lies far outside the {width} x {height} image (more "
                f"than {limit} pixels beyond its edge); the coordinates are damaged, fix them"
            )
    return None


def far_shape(shapes: Iterable[Shape], width: int, height: int) -> str | None:
    """`far_vertex` over each shape in turn, naming the shape (its place and label)."""
    for i, shape in enumerate(shapes):
        far = far_vertex(shape.points, width, height)
        if far:
            return f"shape {i} ({shape.label!r}): {far}"
    return None


@dataclass(frozen=True)
class ImageSource:
    """Where an annotation's image is: its displayed size and the bytes to copy."""

    width: int
    height: int
    file: Path | None  # the original file, copied or linked as is
    data: (
        bytes | None
    )  # embedded image bytes (labelme's imageData), written as is when no matching file exists
    suffix: str
