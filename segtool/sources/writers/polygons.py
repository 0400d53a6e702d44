"""A label mask -> polygons that an annotation tool paints back into the same mask.

Polygon tools (labelme, CVAT, VIA, Label Studio) have no holes: a shape is filled, and later
shapes paint over earlier ones. So a mask becomes a painter's list: every 4-connected part of
every value (background included) is traced along the centres of its edge pixels
(``cv2.findContours``, ``CHAIN_APPROX_SIMPLE``: only collinear vertices are dropped) and
filled; parts are listed largest filled area first, so a part that lies in another's hole
comes after it and paints its pixels back. A background part is listed only where a larger
part covered it (a hole); holes are shapes of class 0's name.

Why this round-trips: labelme's rule (PIL's ``polygon`` with fill and outline) paints every
pixel whose centre lies inside or on the polygon, so a polygon through the centres of a
part's edge pixels paints that part and whatever it encloses, nothing else. 4-connected parts
traced as 8-connected curves, holes as 4-connected background (OpenCV's convention), keep
nesting a tree: a part is either inside another's hole or apart from its filled area. A
one-pixel part is a polygon of one repeated vertex, a one-pixel-wide line the line there and
back; both paint exactly their pixels. With ``tolerance`` > 0 each outline is simplified by
``cv2.approxPolyDP`` (Douglas-Peucker, the largest distance of a dropped vertex, in pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segtool.core.errors import SegtoolError

if TYPE_CHECKING:
    import numpy as np

#: Fewer vertices than a polygon needs in every format (labelme, CVAT, VIA, Label Studio).
MIN_VERTICES = 3


@dataclass(frozen=True)
class Region:
    """One filled polygon of the painter's list.

    Attributes:
        label: the class name (class 0's name for a hole).
        class_id: the class id painted.
        points: vertices (x, y) in pixels, at least `MIN_VERTICES` (repeated for thin parts).
        pixels: the part's own pixels (its holes not counted).
        score: the mean confidence over the part's pixels, or None without confidences.
    """

    label: str
    class_id: int
    points: tuple[tuple[float, float], ...]
    pixels: int
    score: float | None = None


def check_tolerance(tolerance: float) -> None:
    """Refuse a simplification tolerance that is negative or not a number.

    Raises:
        SegtoolError: the tolerance and the fix.
    """
    if not tolerance >= 0:  # NaN fails too
        raise SegtoolError(f"--simplify {tolerance} must be a distance in pixels >= 0")


def outline(part: np.ndarray, offset: tuple[int, int], tolerance: float) -> list[tuple[int, int]]:
    """The vertices of one connected part's outer edge (pixel centres), simplified.

    Args:
        part: a uint8 patch, 1 on the part, with a zero border.
        offset: (x, y) of the patch's top-left pixel in the image.
        tolerance: approxPolyDP's epsilon in pixels (0: only collinear vertices dropped).
    """
    import cv2

    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    contour = max(contours, key=len)  # one for a connected part
    if tolerance > 0 and len(contour) > MIN_VERTICES:
        contour = cv2.approxPolyDP(contour, tolerance, True)
    points = [(int(x), int(y)) for x, y in contour.reshape(-1, 2)]
    if len(points) < MIN_VERTICES:  # a pixel, or a line: there and back
        points = (points + points[::-1] + points)[: max(MIN_VERTICES, 2 * len(points) - 1)]
    return points


def _parts(labels: np.ndarray) -> list[tuple[int, np.ndarray, tuple[int, int, int, int]]]:
    """Every 4-connected part of every value: (value, its pixels' mask in its box, the box)."""
    import cv2
    import numpy as np

    parts = []
    for value in np.unique(labels).tolist():
        count, ids, stats, _ = cv2.connectedComponentsWithStats(
            (labels == value).astype(np.uint8), connectivity=4
        )
        for k in range(1, count):
            x, y, w, h = (int(v) for v in stats[k, :4])
            parts.append((value, ids[y : y + h, x : x + w] == k, (x, y, w, h)))
    return parts


def painted_regions(
    labels: np.ndarray,
    names: Sequence[str],
    tolerance: float = 0.0,
    confidence: np.ndarray | None = None,
) -> list[Region]:
    """The painter's list that redraws an exclusive label mask (see the module's docstring).

    Args:
        labels: H x W class ids.
        names: class names by id (id 0's name labels holes).
        tolerance: approxPolyDP's epsilon in pixels; 0 keeps the outlines exact.
        confidence: H x W probability of each pixel's class, for the scores.

    Returns:
        Regions in drawing order: a later one paints over an earlier one.
    """
    import cv2
    import numpy as np

    check_tolerance(tolerance)
    height, width = labels.shape
    todo = []
    for value, own, (x, y, w, h) in _parts(labels):
        touches = x == 0 or y == 0 or x + w == width or y + h == height
        if value == 0 and touches:
            continue  # background reaching the edge lies in no part's hole
        patch = np.pad(own, 1).astype(np.uint8)
        points = outline(patch, (x - 1, y - 1), 0.0)
        filled = np.zeros_like(patch)
        cv2.fillPoly(filled, [np.array(points, np.int32) - (x - 1, y - 1)], 1)
        filled = (filled > 0) | (patch > 0)
        todo.append((int(filled.sum()), value, own, (x, y), filled[1:-1, 1:-1], points))
    todo.sort(key=lambda t: -t[0])  # a part in another's hole has the smaller filled area
    covered = np.zeros(labels.shape, bool)
    regions = []
    for _, value, own, (x, y), filled, points in todo:
        box = covered[y : y + own.shape[0], x : x + own.shape[1]]
        if value == 0 and not box[own].any():
            continue  # a background part nothing covered: nothing to paint back
        box |= filled
        if tolerance > 0:
            points = outline(np.pad(own, 1).astype(np.uint8), (x - 1, y - 1), tolerance)
        score = None
        if confidence is not None and value != 0:
            score = float(confidence[y : y + own.shape[0], x : x + own.shape[1]][own].mean())
        regions.append(Region(names[value], value, tuple(points), int(own.sum()), score))
    return regions


@dataclass(frozen=True)
class Blob:
    """One connected part of one class as a mask, for formats that carry masks (COCO RLE)."""

    label: str
    class_id: int
    mask: np.ndarray  # H x W bool, the part's pixels only (its holes are holes)
    bbox: tuple[int, int, int, int]  # x, y, width, height
    score: float | None = None


def class_blobs(
    planes: np.ndarray, names: Sequence[str], confidence: np.ndarray | None = None
) -> list[Blob]:
    """Every 8-connected part of each class plane, class by class.

    Args:
        planes: C x H x W bool, plane c the pixels of class ``c + 1`` (exclusive masks give
            disjoint planes; multi-label masks may overlap).
        names: class names by id (id 0 the background).
        confidence: C x H x W probabilities of each class, for the scores.
    """
    import cv2
    import numpy as np

    blobs = []
    for c, plane in enumerate(planes):
        count, ids, stats, _ = cv2.connectedComponentsWithStats(
            plane.astype(np.uint8), connectivity=8
        )
        for k in range(1, count):
            mask = ids == k
            score = None if confidence is None else float(confidence[c][mask].mean())
            x, y, w, h = (int(v) for v in stats[k, :4])
            blobs.append(Blob(names[c + 1], c + 1, mask, (x, y, w, h), score))
    return blobs
