"""Lesion-wise Dice and HD95, as the BraTS 2023 lesion-wise evaluation (its published code,
``get_lesion_wise_score`` / ``get_lesion_wise_results``), for 2-D images and 3-D volumes.

A pixel Dice pools every pixel of a class, so a prediction that outlines one large lesion and
misses five small ones still scores near 0.9; the lesion-wise mean gives each lesion, and each
false positive, the same weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segtool.core.distances import hd95, worst_distance
from segtool.core.objects import ObjectOptions, label_components


def _spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    scale = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (ndim,):
        raise ValueError(f"spacing {tuple(spacing or ())} does not match {ndim} axes")
    return scale


@dataclass(frozen=True)
class LesionScore:
    """Lesion-wise scores of one class in one image or case."""

    #: mean over scored lesions and false positives; NaN when there are none
    dice: float
    #: the same mean of HD95 (false positives and missed lesions: the worst distance)
    hd95: float
    #: reference lesions larger than the minimum size (the ones scored)
    lesions: int
    #: scored lesions that no predicted component touches
    missed: int
    #: predicted components that touch no reference lesion (small ones included)
    false_positives: int
    #: reference lesions of at most the minimum size, left out
    small: int


def _grow(mask: np.ndarray, iterations: int) -> np.ndarray:
    """BraTS's dilation: `iterations` times by SciPy's rank-2 structuring element (in 3-D the
    18 face and edge neighbours; in 2-D all 8)."""
    if not iterations:
        return mask
    if mask.ndim == 2:
        import cv2  # the 3 x 3 square, pixels outside the image background, as SciPy's

        square = np.ones((3, 3), np.uint8)
        grown = cv2.dilate(mask.view(np.uint8), square, iterations=iterations, borderValue=0)
        return grown.view(bool)
    from scipy import ndimage

    element = ndimage.generate_binary_structure(mask.ndim, 2)
    return ndimage.binary_dilation(mask, element, iterations=iterations)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True pixel of `mask`; None when there is none."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def widen_box(box: tuple[slice, ...], by: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """`box` grown by `by` along every axis, inside an array of `shape`."""
    return tuple(
        slice(max(s.start - by, 0), min(s.stop + by, n)) for s, n in zip(box, shape, strict=True)
    )


def _cover(boxes: list[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(
        slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes))
        for a in range(len(boxes[0]))
    )


def lesion_wise(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] | None = None,
    options: ObjectOptions = ObjectOptions(),
    *,
    parts: tuple[np.ndarray, int] | None = None,
    worst: float | None = None,
) -> LesionScore:
    """Lesion-wise Dice and HD95 of two boolean masks, as the BraTS 2023 evaluation.

    1. Reference lesions: the components of the reference dilated `dilation` times (`_grow`),
       each holding the reference pixels inside it, so lesions closer than the dilation are one
       lesion (the reference itself is not changed).
    2. Each lesion is dilated again; every predicted component that touches the dilated lesion
       is matched to it (a component may match several lesions). Its Dice and HD95 are those of
       the lesion and the union of its matched components; a lesion matched to nothing scores
       Dice 0 and the worst distance.
    3. Predicted components matched to no lesion are false positives: Dice 0, worst distance.
    4. Lesions of `min_size` or less (pixels x spacing: pixels on images, mm^3 on volumes) are
       left out of the means (their matched components are not false positives).
    5. Lesion-wise Dice = sum of the scored lesions' Dice / (scored lesions + false
       positives); lesion-wise HD95 likewise, each false positive adding the worst distance.

    The worst distance is the array's diagonal in the spacing's unit, the distance segtool's
    HD95 gives when one mask is empty (BraTS uses 374 mm, its 240 x 240 x 155 mm grid's
    diagonal rounded up). HD95 is segtool's (MONAI's) definition; the BraTS code uses DeepMind's
    ``compute_robust_hausdorff``, which weights boundary points by their surface area.

    Empty cases: a reference without lesions and a prediction with components: each is a false
    positive (Dice 0, the worst distance); lesions and an empty prediction: each missed (0, the
    worst distance); nothing to score (both empty, or only small lesions and no false
    positive): NaN, left out of the means and counted (BraTS scores it Dice 1, HD95 0).

    Args:
        reference: boolean mask of one class (any number of dimensions).
        prediction: boolean mask of the same shape.
        spacing: pixel or voxel size per axis (default 1).
        options: the dilation (default 3, BraTS-GLI's; 0 turns it off), the minimum size
            (default 50, BraTS-GLI's), the connectivity (default full, as BraTS) and whether
            to compute HD95.
        parts: the prediction's components (`label_components`), if already found.
        worst: the worst distance (default: the array's diagonal in the spacing's unit).
    """
    from scipy import ndimage

    scale = _spacing(spacing, reference.ndim)
    dilation, connectivity = options.dilation, options.connectivity
    worst = worst_distance(reference.shape, scale) if worst is None else worst
    groups, n_groups = label_components(_grow(reference, dilation), connectivity)
    lesions = groups * reference
    parts, n_parts = parts or label_components(prediction, connectivity)
    part_boxes = ndimage.find_objects(parts)
    part_sizes = np.bincount(parts[parts > 0], minlength=n_parts + 1)
    sizes = np.bincount(groups[reference], minlength=n_groups + 1)[1:] * float(np.prod(scale))
    touched = np.zeros(n_parts + 1, dtype=bool)
    dice, hd = np.zeros(n_groups), np.full(n_groups, worst)
    matched_any = np.zeros(n_groups, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(lesions)):
        wide = widen_box(box, dilation, reference.shape)
        lesion = lesions[wide] == i + 1
        matched = np.unique(parts[wide][_grow(lesion, dilation)])
        matched = matched[matched > 0]
        if not matched.size:
            continue
        touched[matched] = matched_any[i] = True
        cover = _cover([box, *(part_boxes[m - 1] for m in matched)])
        ref_mask = lesions[cover] == i + 1
        pred_mask = np.isin(parts[cover], matched)
        inter = np.count_nonzero(ref_mask & pred_mask)
        dice[i] = 2 * inter / (np.count_nonzero(ref_mask) + part_sizes[matched].sum())
        hd[i] = hd95(ref_mask, pred_mask, scale) if options.distances else np.nan
    false_positives = int(n_parts - touched[1:].sum())
    scored = sizes > options.min_size
    n = int(scored.sum()) + false_positives
    return LesionScore(
        dice=float(dice[scored].sum() / n) if n else float("nan"),
        hd95=float((hd[scored].sum() + false_positives * worst) / n)
        if n and options.distances
        else float("nan"),
        lesions=int(scored.sum()),
        missed=int((scored & ~matched_any).sum()),
        false_positives=false_positives,
        small=int((~scored).sum()),
    )
