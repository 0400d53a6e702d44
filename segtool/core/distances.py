"""HD95: the boundary distance between two masks of any number of dimensions, in pixels or mm.

One definition for images and volumes, MONAI's ``HausdorffDistanceMetric(percentile=95)``
with ``spacing``: boundaries are each mask minus its erosion by the cross (SciPy's default
structuring element, the 2N face neighbours; outside the array counts as background);
distances, scaled by the spacing, go from each boundary point to the nearest boundary point of
the other mask; the result is the larger of the two directions' 95th percentiles (linear
interpolation). Empty-case policy: exactly one mask empty -> the array's diagonal (the worst
case); both empty -> NaN.

Per class, pixels are left out only where the *reference* holds the ignore value: a predicted
ignore value predicts no class (as in `segtool.core.metrics.count`), so a prediction cannot
abstain its way to a better distance.

Two engines give the same numbers: a 2-D pixel grid (spacing 1) uses OpenCV's exact distance
transform; anything else (volumes, millimetres) a k-d tree over the boundary points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segtool.core.multilabel import ignore_value

#: Squared distances below this are recovered exactly from OpenCV's float32 distances;
#: larger boxes use SciPy's float64 transform.
_EXACT_LIMIT = 2**22
#: 4-connected structuring element: SciPy's default for binary erosion in 2-D (OpenCV's
#: MORPH_CROSS 3 x 3).
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """A boolean mask minus its erosion by the cross (the 2N face neighbours), points outside
    the array counting as background."""
    if mask.ndim == 2:
        import cv2

        padded = np.pad(mask, 1)
        eroded = cv2.erode(padded.view(np.uint8), _CROSS).view(bool)[1:-1, 1:-1]
        return mask & ~eroded
    padded = np.pad(mask, 1)
    eroded = mask.copy()
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for shift in (slice(0, -2), slice(2, None)):
            neighbour = list(inner)
            neighbour[axis] = shift
            eroded &= padded[tuple(neighbour)]
    return mask & ~eroded


def worst_distance(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The diagonal of the whole array (in the spacing's unit): the worst-case score when one
    mask is empty."""
    scale = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum((np.asarray(shape) * scale) ** 2)))


def hd95(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None
) -> float:
    """95th-percentile symmetric Hausdorff distance between two boolean masks (module docstring).

    Args:
        reference: boolean mask (any number of dimensions).
        prediction: boolean mask of the same shape.
        spacing: the size of a pixel or voxel along each axis (default 1: pixels).

    Returns:
        the distance in the spacing's unit, or NaN when both masks are empty.

    Raises:
        ValueError: `spacing` does not have one value per axis.
    """
    scale = np.ones(reference.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (reference.ndim,):
        raise ValueError(f"spacing {tuple(spacing or ())} does not match {reference.ndim} axes")
    ref_any, pred_any = reference.any(), prediction.any()
    if not ref_any and not pred_any:
        return float("nan")
    if not ref_any or not pred_any:
        return worst_distance(reference.shape, scale)
    forward, backward = surface_distances(reference, prediction, scale)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def surface_distances(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distances (in the spacing's unit) from each boundary point of the prediction to the
    nearest boundary point of the reference, and from each of the reference's to the
    prediction's: MONAI's ``get_edge_surface_distance(..., symmetric=True)``. Both masks must
    be non-empty.

    Args:
        reference: non-empty boolean mask (any number of dimensions).
        prediction: non-empty boolean mask of the same shape.
        spacing: pixel or voxel size per axis (default 1).

    Returns:
        (prediction -> reference, reference -> prediction), one distance per boundary point.
    """
    scale = np.ones(reference.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    box = _bounding_box(reference | prediction)
    ref_edges, pred_edges = boundary(reference[box]), boundary(prediction[box])
    if _pixel_grid(scale):
        return _field_distances(pred_edges, ref_edges), _field_distances(ref_edges, pred_edges)
    ref_points, ref_shared = _surface(ref_edges, pred_edges, scale)
    pred_points, pred_shared = _surface(pred_edges, ref_edges, scale)
    return (
        _tree_distances(pred_points, pred_shared, ref_points),
        _tree_distances(ref_points, ref_shared, pred_points),
    )


def _pixel_grid(scale: np.ndarray) -> bool:
    """Whether OpenCV's 2-D distance transform applies: two axes, spacing 1."""
    return len(scale) == 2 and bool((scale == 1).all())


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True point of a non-empty mask (one pass over the whole
    array; the last axis is searched inside the box of the others)."""
    if mask.ndim == 1:
        hit = np.flatnonzero(mask)
        return (slice(hit[0], hit[-1] + 1),)
    lead = _bounding_box(mask.any(axis=-1))
    hit = np.flatnonzero(mask[lead].any(axis=tuple(range(mask.ndim - 1))))
    return (*lead, slice(hit[0], hit[-1] + 1))


def _field_distances(from_edges: np.ndarray, to_edges: np.ndarray) -> np.ndarray:
    """2-D pixels: for each pixel of `from_edges`, the distance to the nearest `to_edges` pixel."""
    if to_edges.shape[0] ** 2 + to_edges.shape[1] ** 2 >= _EXACT_LIMIT:
        from scipy import ndimage  # imported here: it takes 0.4 s to load

        return ndimage.distance_transform_edt(~to_edges)[from_edges]
    # OpenCV's exact transform (Felzenszwalb's algorithm, DIST_MASK_PRECISE) returns float32
    # square roots of whole numbers; squaring and rounding recovers those whole numbers exactly
    # below _EXACT_LIMIT, and the float64 root then matches SciPy's (and MONAI's) distances.
    import cv2

    field = cv2.distanceTransform((~to_edges).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.rint(field[from_edges].astype(np.float64) ** 2))


def _surface(edges: np.ndarray, other: np.ndarray, scale: np.ndarray) -> tuple:
    """(coordinates, in the spacing's unit, of the points of `edges`; which of them are also
    in `other`)."""
    flat = np.flatnonzero(edges)
    coords = np.stack(np.unravel_index(flat, edges.shape), axis=1) * scale
    return coords, other.ravel()[flat]


def _tree_distances(queries: np.ndarray, shared: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each query point, the Euclidean distance to the nearest target point (k-d tree);
    points flagged `shared` lie on both surfaces and are 0 without a search."""
    from scipy.spatial import cKDTree  # imported here: SciPy's spatial module loads slowly

    out = np.zeros(len(queries))
    if shared.all():
        return out
    # Uncompacted nodes answer far-away queries (stray false positives) about twice as fast.
    tree = cKDTree(targets, leafsize=32, compact_nodes=False)
    out[~shared] = tree.query(queries[~shared], k=1)[0]
    return out


def hd95_per_class(
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[int],
    ignore_index: int,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """HD95 of each class id in `classes` between two label masks. Only the reference's ignore
    pixels are left out (from both masks); a predicted ignore value predicts no class."""
    counted = reference != ignore_index
    out = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        out[i] = hd95(reference == c, (prediction == c) & counted, spacing)
    return out


def hd95_multilabel(
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[int],
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """HD95 of each class id in `classes` between two multi-label (bit-set) masks, the
    reference's ignore pixels left out of both (a prediction's ignore bit predicts no class)."""
    dtype = reference.dtype.type
    ignore = dtype(ignore_value(num_classes - 1))
    counted = (reference & ignore) == 0
    predicted = counted & ((prediction & ignore) == 0)
    out = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        bit = dtype(1 << (c - 1))
        ref_c = ((reference & bit) != 0) & counted
        out[i] = hd95(ref_c, ((prediction & bit) != 0) & predicted, spacing)
    return out
