"""Normalised surface Dice (NSD): the share of both boundaries that lies within a tolerance of
the other, for 2-D images (pixels) and 3-D volumes (mm with the voxel spacing).

Dice rewards overlap, so a boundary a few pixels off on a large object costs little and the
same error on a small object costs a lot; NSD asks instead whether each boundary point is
within `tolerance` of the other mask's boundary (Nikolov et al. 2021), which is what a reader
checking an outline cares about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from segtool.core.distances import surface_distances
from segtool.core.objects import class_masks


def surface_dice(
    reference: np.ndarray,
    prediction: np.ndarray,
    tolerance: float,
    spacing: Sequence[float] | None = None,
) -> float:
    """Normalised surface Dice of two boolean masks, as MONAI's ``compute_surface_dice``
    (``use_subvoxels=False``).

    Boundaries are each mask minus its erosion by the cross (outside the array counting as
    background), as for HD95; NSD = (prediction boundary points within `tolerance` of the
    reference boundary + reference boundary points within `tolerance` of the prediction
    boundary) / (all boundary points of both), distances in the spacing's unit (<= counts).
    Empty cases: exactly one mask empty: 0; both empty: NaN (left out of means and counted).

    Args:
        reference: boolean mask (any number of dimensions).
        prediction: boolean mask of the same shape.
        tolerance: the accepted distance (pixels, or mm with `spacing`), finite and >= 0.
        spacing: pixel or voxel size per axis (default 1).

    Returns:
        NSD in [0, 1], or NaN.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance {tolerance} is not a finite distance >= 0")
    ref_any, pred_any = reference.any(), prediction.any()
    if not ref_any and not pred_any:
        return float("nan")
    if not ref_any or not pred_any:
        return 0.0
    forward, backward = surface_distances(reference, prediction, spacing)
    within = np.count_nonzero(forward <= tolerance) + np.count_nonzero(backward <= tolerance)
    return within / (len(forward) + len(backward))


def surface_dice_per_class(
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[int],
    ignore_index: int,
    tolerance: float,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """NSD of each class id in `classes` between two label masks (`class_masks`: only the
    reference's ignore pixels are left out)."""
    return np.array(
        [
            surface_dice(ref, pred, tolerance, spacing)
            for ref, pred in class_masks(reference, prediction, classes, ignore_index)
        ],
        dtype=np.float64,
    )
