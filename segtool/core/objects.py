"""Object-level scores: connected components, lesion-wise Dice and HD95, detection and
panoptic quality, for 2-D images and 3-D volumes.

Pixel scores pool every pixel of a class, so a prediction that outlines one large object and
misses five small ones still scores a Dice near 0.9. The scores here count objects instead.
Pure numpy and SciPy; every function takes boolean masks (or integer object ids) of any
number of dimensions and a spacing (the size of a pixel or voxel along each axis; 1 for pixels).

- **Objects** are connected components (`label_components`); `connectivity` is SciPy's
  rank: 1 joins face neighbours only, the number of axes (the default, "full") joins every
  neighbour that shares a corner (8 in 2-D, 26 in 3-D, as the BraTS 2023 code's ``cc3d``).
- **Lesion-wise Dice and HD95** (`segtool.core.lesions`) follow the BraTS 2023 lesion-wise
  evaluation.
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

#: BraTS 2023's defaults for its main task (BraTS-GLI; also SSA and PED): the reference is
#: dilated 3 times, and lesions of 50 voxels (mm^3 at its 1 mm spacing) or less are left out.
#: BraTS-MEN uses 1 and 50, BraTS-MET 1 and 2.
BRATS_DILATION = 3
BRATS_MIN_SIZE = 50.0
#: The minimum lesion size on 2-D images: none, every object counts. BraTS's 50 voxels drop
#: label noise at 1 mm³ in brain MRI; in a photo an object of a few pixels is drawn on
#: purpose (the demo's spots are 20-56 px, median 36: a minimum of 50 left out 12 of its 13
#: test spots), so volumes keep BraTS's size and images count every object.
IMAGE_MIN_SIZE = 0.0
#: OpenCV labels 2-D masks below this many pixels (its int32 labels and indexing).
_CV_LIMIT = 2**31 - 1
#: The IoU at which a predicted object counts as finding a reference object (detection, PQ).
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class ObjectOptions:
    """How objects are found and scored.

    Attributes:
        dilation: lesion-wise: dilation steps that join near reference lesions and widen the
            match (BraTS-GLI's 3; 0: none).
        min_size: lesion-wise: reference lesions of at most this size (pixels x spacing:
            pixels, or mm^3 for volumes) are left out (BraTS-GLI's 50).
        connectivity: of objects: 1 (face neighbours) up to the number of axes; None: full.
        iou_threshold: detection: a predicted object finds a reference object at IoU >= this;
            panoptic quality: at IoU > this (MONAI's rule).
        distances: lesion-wise HD95 (the slow part); False: NaN.
    """

    dilation: int = BRATS_DILATION
    min_size: float = BRATS_MIN_SIZE
    connectivity: int | None = None
    iou_threshold: float = IOU_THRESHOLD
    distances: bool = True

    def __post_init__(self) -> None:
        if self.dilation < 0:
            raise ValueError(f"dilation {self.dilation} is negative")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"IoU threshold {self.iou_threshold} is not in (0, 1]")


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
    structure = _structure(mask.ndim, connectivity)
    if mask.ndim == 2 and mask.size < _CV_LIMIT:
        import cv2  # several times faster than SciPy on images; the same components

        n, ids = cv2.connectedComponents(
            mask.view(np.uint8), connectivity=8 if structure.all() else 4, ltype=cv2.CV_32S
        )
        return ids, int(n) - 1
    from scipy import ndimage

    ids, n = ndimage.label(mask, structure=structure)
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
    # Only pixels inside some object matter: usually a small share of the array.
    inside = np.flatnonzero((reference_ids != 0) | (prediction_ids != 0))
    ref, ref_sizes = _renumber(reference_ids.ravel()[inside])
    pred, pred_sizes = _renumber(prediction_ids.ravel()[inside])
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
    most one other, so the qualifying pairs are the matches. Otherwise: for detection, where
    an object qualifies with several, the Munkres assignment that maximises the summed IoU of
    the qualifying pairs picks the matches; for panoptic quality below 0.5, as MONAI's
    ``compute_panoptic_quality``, that assignment over all overlapping pairs picks them and
    those that do not qualify are dropped.

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
    if inclusive:
        unique = _distinct(rows[qualifies]) and _distinct(cols[qualifies])
    else:
        unique = threshold >= 0.5  # MONAI's rule, kept for equal numbers below 0.5
    if not unique:
        from scipy.optimize import linear_sum_assignment

        table = np.zeros((n_ref, n_pred))
        keep = qualifies if inclusive else slice(None)
        table[rows[keep], cols[keep]] = iou[keep]
        picked_rows, picked_cols = linear_sum_assignment(table, maximize=True)
        picked = table[picked_rows, picked_cols]
        kept = picked >= threshold if inclusive else picked > threshold
        picked = picked[kept & (picked > 0)]
    else:
        picked = iou[qualifies]
    tp = len(picked)
    return Matches(tp=tp, fp=n_pred - tp, fn=n_ref - tp, iou_sum=float(picked.sum()))


def _distinct(ids: np.ndarray) -> bool:
    return len(np.unique(ids)) == len(ids)


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


def class_masks(
    reference: np.ndarray, prediction: np.ndarray, classes: Sequence[int], ignore_index: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each class id in `classes`, its (reference, prediction) boolean masks under the
    one rule: pixels where the reference holds `ignore_index` are left out of both, and a
    predicted ignore value predicts no class."""
    counted = reference != ignore_index
    for c in classes:
        yield reference == c, (prediction == c) & counted
