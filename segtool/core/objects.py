"""Object-level scores: connected components, lesion-wise Dice and HD95, detection and
panoptic quality, for 2-D images and 3-D volumes.

Pixel scores pool every pixel of a class, so a prediction that outlines one large object and
misses five small ones still scores a Dice near 0.9. The scores here count objects instead.
Pure numpy and SciPy; every function takes boolean masks (or integer object ids) of any
number of dimensions and a spacing (the size of a pixel or voxel along each axis; 1 for pixels).

- **Objects** are connected components (`label_components`); `connectivity` is SciPy's
  rank: 1 joins face neighbours only, the number of axes (the default, "full") joins every
  neighbour that shares a corner (8 in 2-D, 26 in 3-D, as the BraTS 2023 code's ``cc3d``).
- **Lesion-wise Dice and HD95** (`lesion_wise`) follow the BraTS 2023 lesion-wise evaluation.
- **Detection** (`match_objects`, `detection`): objects matched one to one at IoU >= a threshold.
- **Panoptic quality** (`match_objects` with ``inclusive=False``, `panoptic`): MONAI's
  ``compute_panoptic_quality`` on instance ids: PQ = SQ x RQ.

Which pixels count is the caller's rule, as for every segtool score: pixels are left out only
where the *reference* holds the ignore value (`class_masks`), and a predicted ignore value
predicts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from segtool.core.distances import hd95, worst_distance

#: BraTS 2023's defaults for its main task (BraTS-GLI; also SSA and PED): the reference is
#: dilated 3 times, and lesions of 50 voxels (mm^3 at its 1 mm spacing) or less are left out.
#: BraTS-MEN uses 1 and 50, BraTS-MET 1 and 2.
BRATS_DILATION = 3
BRATS_MIN_SIZE = 50.0
#: The IoU at which a predicted object counts as finding a reference object (detection, PQ).
IOU_THRESHOLD = 0.5


def _spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    scale = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (ndim,):
        raise ValueError(f"spacing {tuple(spacing or ())} does not match {ndim} axes")
    return scale


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
    from scipy import ndimage

    rank = ndim if connectivity is None else connectivity
    if not 1 <= rank <= ndim:
        raise ValueError(f"connectivity {connectivity} is not between 1 and {ndim}")
    return ndimage.generate_binary_structure(ndim, rank)


def label_components(mask: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """Number the connected components of a boolean mask 1..N (0: background).

    Args:
        mask: boolean array of any number of dimensions.
        connectivity: 1 (face neighbours) up to the number of axes; None: the number of axes
            (full: corner neighbours too).

    Returns:
        (an int32 array of component ids, N).
    """
    from scipy import ndimage

    ids, n = ndimage.label(mask, structure=_structure(mask.ndim, connectivity))
    return ids, int(n)


# --- object matching: detection and panoptic quality --------------------------------------


@dataclass(frozen=True)
class Matches:
    """Objects of one image (or pooled over many) after one-to-one matching."""

    #: matched pairs
    tp: int = 0
    #: predicted objects matched to no reference object
    fp: int = 0
    #: reference objects matched to no predicted object
    fn: int = 0
    #: the IoU of every matched pair, summed (panoptic quality's numerator)
    iou_sum: float = 0.0

    def __add__(self, other: Matches) -> Matches:
        return Matches(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.iou_sum + other.iou_sum,
        )


#: Object ids up to this are renumbered with a lookup table (linear time); larger ones sorted.
_TABLE_IDS = 1 << 20


def _renumber(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object ids as 1..N in increasing order (0 stays background), and each object's size."""
    flat = ids.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < _TABLE_IDS:
        sizes = np.bincount(flat)
        present = np.flatnonzero(sizes[1:]) + 1
        table = np.zeros(len(sizes), dtype=np.int64)
        table[present] = np.arange(1, len(present) + 1)
        return table[flat], sizes[present]
    values, codes, sizes = np.unique(flat, return_inverse=True, return_counts=True)
    if values.size and values[0] == 0:
        return codes.ravel(), sizes[1:]
    return codes.ravel() + 1, sizes


def _overlaps(
    reference_ids: np.ndarray, prediction_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Every (reference object, predicted object) pair that shares a pixel, numbered from 0,
    with its IoU; and the number of objects on each side. Ids need not be contiguous."""
    ref, ref_sizes = _renumber(reference_ids)
    pred, pred_sizes = _renumber(prediction_ids)
    width = len(pred_sizes) + 1
    both = (ref > 0) & (pred > 0)
    pairs = ref[both] * width + pred[both]
    if (len(ref_sizes) + 1) * width <= _TABLE_IDS:
        inter = np.bincount(pairs, minlength=(len(ref_sizes) + 1) * width)
        codes = np.flatnonzero(inter)
        inter = inter[codes]
    else:
        codes, inter = np.unique(pairs, return_counts=True)
    rows, cols = np.divmod(codes, width)
    rows, cols = rows - 1, cols - 1
    iou = inter / (ref_sizes[rows] + pred_sizes[cols] - inter)
    return rows, cols, iou, len(ref_sizes), len(pred_sizes)


def match_objects(
    reference_ids: np.ndarray,
    prediction_ids: np.ndarray,
    threshold: float = IOU_THRESHOLD,
    *,
    inclusive: bool = True,
) -> Matches:
    """Match reference and predicted objects one to one by IoU.

    A pair qualifies at IoU >= `threshold` (``inclusive``, detection) or IoU > `threshold`
    (panoptic quality, as MONAI and Kirillov et al.). Above 0.5 an object can qualify with at
    most one other, so the qualifying pairs are the matches; otherwise (as MONAI's
    ``compute_panoptic_quality`` below 0.5) the Munkres assignment that maximises the summed IoU
    of all overlapping pairs picks the pairs, and those that do not qualify are dropped.

    Args:
        reference_ids: integer array, 0 background, each other value one object.
        prediction_ids: integer array of the same shape.
        threshold: the IoU in (0, 1].
        inclusive: whether an IoU equal to `threshold` qualifies.

    Returns:
        the matched pairs, the unmatched objects of each side and the matched IoUs' sum.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"IoU threshold {threshold} is not in (0, 1]")
    rows, cols, iou, n_ref, n_pred = _overlaps(reference_ids, prediction_ids)
    qualifies = iou >= threshold if inclusive else iou > threshold
    unique = threshold > 0.5 or (threshold == 0.5 and not inclusive)
    if not unique:
        from scipy.optimize import linear_sum_assignment

        table = np.zeros((n_ref, n_pred))
        table[rows, cols] = iou
        picked_rows, picked_cols = linear_sum_assignment(table, maximize=True)
        picked = table[picked_rows, picked_cols]
        kept = picked >= threshold if inclusive else picked > threshold
        picked = picked[kept & (picked > 0)]
    else:
        picked = iou[qualifies]
    tp = len(picked)
    return Matches(tp=tp, fp=n_pred - tp, fn=n_ref - tp, iou_sum=float(picked.sum()))


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def detection(m: Matches) -> tuple[float, float, float]:
    """(precision, recall, F1) of matched objects: TP / (TP + FP), TP / (TP + FN),
    2TP / (2TP + FP + FN). Empty cases: precision is NaN when nothing was predicted, recall
    when the reference has no object, F1 when neither has one."""
    return (
        _ratio(m.tp, m.tp + m.fp),
        _ratio(m.tp, m.tp + m.fn),
        _ratio(2 * m.tp, 2 * m.tp + m.fp + m.fn),
    )


def panoptic(m: Matches) -> tuple[float, float, float]:
    """(PQ, SQ, RQ): SQ = the matched pairs' mean IoU, RQ = TP / (TP + FP/2 + FN/2) (the
    detection F1), PQ = SQ x RQ = IoU sum / (TP + FP/2 + FN/2). MONAI adds 1e-6 to each
    denominator, so it reports 0 where these are NaN: PQ and RQ when neither mask has an
    object, SQ when nothing matched."""
    den = m.tp + 0.5 * m.fp + 0.5 * m.fn
    return _ratio(m.iou_sum, den), _ratio(m.iou_sum, m.tp), _ratio(m.tp, den)


# --- lesion-wise Dice and HD95 (BraTS 2023) --------------------------------------------------


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
    from scipy import ndimage

    element = ndimage.generate_binary_structure(mask.ndim, min(2, mask.ndim))
    return ndimage.binary_dilation(mask, element, iterations=iterations)


def _widen(box: tuple[slice, ...], by: int, shape: Sequence[int]) -> tuple[slice, ...]:
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
    *,
    dilation: int = BRATS_DILATION,
    min_size: float = BRATS_MIN_SIZE,
    connectivity: int | None = None,
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
        dilation: dilation steps that join near lesions and widen the match (default 3,
            BraTS-GLI's; 0 turns it off).
        min_size: lesions of at most this size are left out (default 50, BraTS-GLI's).
        connectivity: of components (`label_components`; default full, as BraTS).
    """
    from scipy import ndimage

    scale = _spacing(spacing, reference.ndim)
    if dilation < 0:
        raise ValueError(f"dilation {dilation} is negative")
    worst = worst_distance(reference.shape, scale)
    groups, n_groups = label_components(_grow(reference, dilation), connectivity)
    lesions = np.where(reference, groups, 0)
    parts, n_parts = label_components(prediction, connectivity)
    part_boxes = ndimage.find_objects(parts)
    part_sizes = np.bincount(parts.ravel(), minlength=n_parts + 1)
    sizes = np.bincount(lesions.ravel(), minlength=n_groups + 1)[1:] * float(np.prod(scale))
    touched = np.zeros(n_parts + 1, dtype=bool)
    dice, hd = np.zeros(n_groups), np.full(n_groups, worst)
    matched_any = np.zeros(n_groups, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(lesions)):
        wide = _widen(box, dilation, reference.shape)
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
        hd[i] = hd95(ref_mask, pred_mask, scale)
    false_positives = int(n_parts - touched[1:].sum())
    scored = sizes > min_size
    n = int(scored.sum()) + false_positives
    return LesionScore(
        dice=float(dice[scored].sum() / n) if n else float("nan"),
        hd95=float((hd[scored].sum() + false_positives * worst) / n) if n else float("nan"),
        lesions=int(scored.sum()),
        missed=int((scored & ~matched_any).sum()),
        false_positives=false_positives,
        small=int((~scored).sum()),
    )


def class_masks(
    reference: np.ndarray, prediction: np.ndarray, classes: Sequence[int], ignore_index: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each class id in `classes`, its (reference, prediction) boolean masks under the
    one rule: pixels where the reference holds `ignore_index` are left out of both, and a
    predicted ignore value predicts no class."""
    counted = reference != ignore_index
    for c in classes:
        yield reference == c, (prediction == c) & counted
