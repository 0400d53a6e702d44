"""Distances between 3-D masks in millimetres, for scoring volumes case by case.

Overlap scores of a volume (Dice, IoU, precision, recall) need nothing new: the metrics
module's `count` works on arrays of any shape, and its score functions turn counts into
numbers. What a volume adds is physical distance: HD95 in millimetres from the voxel spacing,
with the same boundary, percentile and empty-case policy as the 2-D `hd95` there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segtool.core.metrics import Counts, dice, nanmean


def boundary(mask: np.ndarray) -> np.ndarray:
    """A boolean mask minus its erosion by the cross (SciPy's default structuring element:
    the 2N face neighbours), voxels outside the array counting as background."""
    padded = np.pad(mask, 1)
    eroded = mask.copy()
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for shift in (slice(0, -2), slice(2, None)):
            neighbour = list(inner)
            neighbour[axis] = shift
            eroded &= padded[tuple(neighbour)]
    return mask & ~eroded


def _surface(edges: np.ndarray, other: np.ndarray, scale: np.ndarray) -> tuple:
    """(coordinates in mm of the voxels of `edges`, which of them are also in `other`)."""
    flat = np.flatnonzero(edges)
    coords = np.stack(np.unravel_index(flat, edges.shape), axis=1) * scale
    return coords, other.ravel()[flat]


def _directed(queries: np.ndarray, shared: np.ndarray, targets: np.ndarray) -> np.ndarray:
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


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The diagonal of the whole array in mm: the worst-case score when one mask is empty."""
    return float(np.sqrt(np.sum((np.asarray(shape) * np.asarray(spacing, dtype=np.float64)) ** 2)))


def hd95_mm(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None
) -> float:
    """95th-percentile symmetric Hausdorff distance between two boolean masks, in mm.

    As MONAI's ``HausdorffDistanceMetric(percentile=95)`` with ``spacing``: boundaries are
    each mask minus its erosion (outside counts as background); distances, scaled by the
    voxel spacing, go from each boundary voxel to the nearest boundary voxel of the other
    mask; the result is the larger of the two directions' 95th percentiles (linear
    interpolation). Empty-case policy as in the 2-D `hd95`: exactly one mask empty -> the
    array's diagonal in mm (the worst case); both empty -> NaN.

    Args:
        reference: boolean mask (any number of dimensions).
        prediction: boolean mask of the same shape.
        spacing: voxel size per axis in mm (default 1).

    Returns:
        the distance in mm, or NaN.
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
    ref_points, ref_shared = _surface(ref_edges, pred_edges, scale)
    pred_points, pred_shared = _surface(pred_edges, ref_edges, scale)
    return (
        _directed(pred_points, pred_shared, ref_points),
        _directed(ref_points, ref_shared, pred_points),
    )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty mask (one pass over the whole
    array; the last axis is searched inside the box of the others)."""
    if mask.ndim == 1:
        hit = np.flatnonzero(mask)
        return (slice(hit[0], hit[-1] + 1),)
    lead = _bounding_box(mask.any(axis=-1))
    hit = np.flatnonzero(mask[lead].any(axis=tuple(range(mask.ndim - 1))))
    return (*lead, slice(hit[0], hit[-1] + 1))


def hd95_per_class_mm(
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[int],
    ignore_index: int,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """HD95 in mm for each class id in `classes`; the reference's ignore voxels are removed
    from both masks first (a prediction's ignore value predicts no class)."""
    valid = reference != ignore_index
    out = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        out[i] = hd95_mm((reference == c) & valid, (prediction == c) & valid, spacing)
    return out


def case_mean(
    per_case: Sequence[Counts], score: Callable[[Counts], np.ndarray] = dice
) -> np.ndarray:
    """Per class, the mean over cases of each case's own score (Dice by default) from its
    3-D counts; a case where the score is NaN (class absent from both) is left out, and a
    class NaN in every case stays NaN. This is how volumes are scored: every voxel of a
    case counts once, and each case weighs the same however large its tumour."""
    if not per_case:
        return np.zeros(0)
    k = max(c.num_classes for c in per_case)
    table = np.stack([score(c.padded(k)) for c in per_case])
    return np.array([nanmean(table[:, j]) for j in range(k)])
