"""Overlap metrics on label masks of any dimension: counts first, scores from counts.

numpy (and OpenCV's histogram for some 8-bit masks); no torch, so training's validation and
``segtool evaluate`` share every number. Definitions (also in docs/evaluate.md):

- Per image and class, TP/FP/FN count pixels. Pixels are left out only where the *reference*
  holds the ignore value (as nnU-Net, MONAI and torchmetrics do). A prediction pixel holding the
  ignore value predicts no class: it is a false negative for the reference's class (and counted
  as ``abstained``), so a prediction cannot abstain its way to a better score.
- Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), precision = TP / (TP + FP),
  recall = TP / (TP + FN). A score whose denominator is 0 is NaN: the *empty-case policy* (for
  Dice and IoU: the class is absent from both prediction and reference).
- HD95, the boundary distance, is in `segtool.core.distances` (one definition for pixels and
  millimetres, the same ignore rule).
- Volumes are scored case by case: `case_mean` is the mean over cases of each case's score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from segtool.core.multilabel import ignore_value

#: Up to this many classes, 3K comparisons count 8-bit masks faster than a histogram.
_COMPARE_MAX_K = 8


class MaskValueError(ValueError):
    """A mask holds a value that is neither a class id nor the ignore value."""

    def __init__(self, value: int, num_classes: int, ignore_index: int) -> None:
        self.value = value
        super().__init__(
            f"value {value} is neither a class id (0..{num_classes - 1}) nor the ignore value "
            f"{ignore_index}"
        )


@dataclass
class Counts:
    """Per-class pixel counts of one image (or pooled over many): arrays of length K."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    #: prediction pixels holding the ignore value where the reference is scored (each also
    #: counted in `fn`)
    abstained: int = 0

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.tp)

    def __add__(self, other: Counts) -> Counts:
        k = max(self.num_classes, other.num_classes)
        return Counts(
            *(
                _pad(a, k) + _pad(b, k)
                for a, b in zip(self.astuple(), other.astuple(), strict=True)
            ),
            abstained=self.abstained + other.abstained,
        )

    def astuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn)."""
        return self.tp, self.fp, self.fn

    def padded(self, k: int) -> Counts:
        """The same counts for K = `k` classes (new classes have zero counts)."""
        return Counts(*(_pad(a, k) for a in self.astuple()), abstained=self.abstained)


def _pad(a: np.ndarray, k: int) -> np.ndarray:
    return a if len(a) >= k else np.concatenate([a, np.zeros(k - len(a), dtype=a.dtype)])


def check_values(mask: np.ndarray, num_classes: int | None, ignore_index: int) -> None:
    """Raise `MaskValueError` for a value that is neither a class id nor the ignore value."""
    if num_classes is None or mask.size == 0:
        return
    top = int(mask.max())
    if top == ignore_index:
        top = int(np.where(mask == ignore_index, 0, mask).max())
    if top >= num_classes:
        raise MaskValueError(top, num_classes, ignore_index)


#: Below this many pixels OpenCV's float32 histogram counts exactly.
_EXACT_HIST = 2**24


def count(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int
) -> Counts:
    """TP, FP and FN per class for one image; reference ignore pixels left out.

    A prediction pixel holding `ignore_index` where the reference holds class c is a false
    negative for c and a false positive for no class (``Counts.abstained`` counts them).

    From the K x (K + 1) confusion matrix (the extra column: "predicted the ignore value"):
    TP is its diagonal, FP the first K column sums minus the diagonal, FN the row sums minus the
    diagonal. 8-bit masks without any ignore value and few classes are counted by comparisons;
    with K <= 15 the pair codes fit one byte and OpenCV's histogram counts them; otherwise
    length-K bincounts give the same numbers in O(K) memory (16-bit masks, K up to 65535).

    Args:
        reference: integer label array.
        prediction: integer label array of the same shape.
        num_classes: K; values must be < K or equal to `ignore_index`.
        ignore_index: the ignore value.
    """
    k = num_classes
    if (
        reference.dtype == np.uint8
        and prediction.dtype == np.uint8
        and k <= _COMPARE_MAX_K
        and reference.size
        and max(int(reference.max()), int(prediction.max())) < k  # no ignore pixel at all
    ):
        return _count_by_comparison(reference, prediction, k)
    if _by_histogram(reference, prediction, k):
        return counts_from_confusion(confusion_matrix(reference, prediction, k, ignore_index))
    ref = reference.ravel()
    pred = prediction.ravel()
    valid = ref != ignore_index
    if not valid.all():
        ref, pred = ref[valid], pred[valid]
    abstain = pred == ignore_index
    hit = ref[ref == pred]
    tp = np.bincount(hit, minlength=k)[:k]
    ref_n = np.bincount(ref, minlength=k)[:k]
    pred_n = np.bincount(pred[~abstain] if abstain.any() else pred, minlength=k)[:k]
    return Counts(tp=tp, fp=pred_n - tp, fn=ref_n - tp, abstained=int(abstain.sum()))


def counts_from_confusion(matrix: np.ndarray) -> Counts:
    """Counts from the K x (K + 1) confusion matrix of `confusion_matrix` (rows the reference
    class, columns the predicted class, the last "predicted the ignore value"): TP is its
    diagonal, FP the first K column sums minus it, FN the row sums minus it. Training's
    validation counts the matrix on the device and reads it through here too."""
    k = matrix.shape[0]
    tp = np.diag(matrix[:, :k]).copy()
    return Counts(
        tp=tp,
        fp=matrix[:, :k].sum(axis=0) - tp,
        fn=matrix.sum(axis=1) - tp,
        abstained=int(matrix[:, k].sum()),
    )


def count_multilabel(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int
) -> tuple[Counts, int, int]:
    """TP, FP and FN per class of two multi-label (bit-set) masks, each class its own binary
    problem, plus the pixels whose whole label set is right.

    Pixels are left out where the reference sets the ignore bit; a prediction pixel with the
    ignore bit predicts no class (it cannot abstain its way to a better score; such pixels
    where the reference is counted are ``Counts.abstained``). Background
    (index 0 of the counts) is not a class of a multi-label mask: its counts stay 0. Per class,
    one bit test of each mask and popcounts of them and of their agreement (as `count` does for
    a handful of exclusive classes); the ignore masks are built only when a mask has the bit.

    Args:
        reference: bit values (uint8, uint16 or uint64; see `segtool.core.multilabel`).
        prediction: bit values of the same shape and type.
        num_classes: K (K-1 class bits).

    Returns:
        (counts of length K, pixels with exactly the reference's label set, counted pixels).
    """
    dtype = reference.dtype.type
    ignore = dtype(ignore_value(num_classes - 1))
    tp, fp, fn = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
    used = np.bitwise_or.reduce(reference, axis=None) | np.bitwise_or.reduce(prediction, axis=None)
    counted = None
    abstained = 0
    if reference.size and used & ignore:
        counted = (reference & ignore) == 0
        predicted_ignore = (prediction & ignore) != 0
        abstained = int(np.count_nonzero(predicted_ignore & counted))
        prediction = np.where(predicted_ignore, dtype(0), prediction)
    for c in range(1, num_classes):
        bit = dtype(1 << (c - 1))
        ref_c = (reference & bit) != 0
        pred_c = (prediction & bit) != 0
        if counted is not None:
            ref_c &= counted
            pred_c &= counted
        tp[c] = np.count_nonzero(ref_c & pred_c)
        fn[c] = np.count_nonzero(ref_c) - tp[c]
        fp[c] = np.count_nonzero(pred_c) - tp[c]
    right = reference == prediction
    if counted is None:
        return Counts(tp, fp, fn), int(np.count_nonzero(right)), int(reference.size)
    exact = int(np.count_nonzero(right & counted))
    return Counts(tp, fp, fn, abstained), exact, int(np.count_nonzero(counted))


def _count_by_comparison(reference: np.ndarray, prediction: np.ndarray, k: int) -> Counts:
    """`count` for masks that hold class ids only: per class a comparison and a popcount of
    each mask and of their agreement (vectorized byte compares beat a 256-bin histogram's
    serial increments for a handful of classes); background's counts follow from the totals."""
    agree = reference == prediction
    work = np.empty_like(agree)  # one scratch mask for every comparison: no allocation each
    tp, ref_n, pred_n = (np.zeros(k, dtype=np.int64) for _ in range(3))
    for c in range(1, k):
        np.equal(reference, c, out=work)
        ref_n[c] = np.count_nonzero(work)
        np.logical_and(work, agree, out=work)
        tp[c] = np.count_nonzero(work)
        np.equal(prediction, c, out=work)
        pred_n[c] = np.count_nonzero(work)
    ref_n[0] = reference.size - ref_n[1:].sum()
    pred_n[0] = reference.size - pred_n[1:].sum()
    tp[0] = np.count_nonzero(agree) - tp[1:].sum()
    return Counts(tp=tp, fp=pred_n - tp, fn=ref_n - tp)


#: From this many pixels OpenCV's histogram pays for loading OpenCV (a small folder's
#: evaluate loads no OpenCV).
_HIST_MIN = 2**16


def _by_histogram(reference: np.ndarray, prediction: np.ndarray, k: int) -> bool:
    """Whether OpenCV's 256-bin histogram counts the pair codes of these masks, exactly and
    sooner than a bincount."""
    return (
        reference.dtype == np.uint8
        and prediction.dtype == np.uint8
        and k * (k + 1) < 255
        and _HIST_MIN <= reference.size < _EXACT_HIST
    )


def confusion_matrix(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """The K x (K + 1) confusion matrix: rows the reference class, columns the predicted class,
    the last column "predicted the ignore value"; reference ignore pixels removed (the one
    ignore rule of `count`). Large 8-bit masks with K <= 15 through OpenCV's histogram of
    one-byte pair codes, others through a bincount of K x (K + 1) codes."""
    k = num_classes
    if _by_histogram(reference, prediction, k):
        import cv2

        width = np.uint8(k + 1)
        # Predicted ignore becomes column K; codes wrap for reference ignore pixels, reset below.
        pred = np.where(prediction == ignore_index, np.uint8(k), prediction)
        code = reference * width + pred
        code[reference == ignore_index] = 255
        hist = cv2.calcHist([code.reshape(-1, 1)], [0], None, [256], [0, 256]).ravel()
        return hist[: k * (k + 1)].astype(np.int64).reshape(k, k + 1)
    ref, pred = reference.ravel(), prediction.ravel()
    valid = ref != ignore_index
    if not valid.all():
        ref, pred = ref[valid], pred[valid]
    code = ref.astype(np.int32 if k * (k + 1) < 2**31 else np.int64)
    code *= k + 1
    code += pred
    code[pred == ignore_index] += k - ignore_index  # predicted ignore: column K
    return np.bincount(code, minlength=k * (k + 1)).reshape(k, k + 1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def dice(c: Counts) -> np.ndarray:
    """2TP / (2TP + FP + FN) per class; NaN where the class is absent from both masks."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Counts) -> np.ndarray:
    """TP / (TP + FP + FN) per class (Jaccard); NaN where the class is absent from both masks."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: Counts) -> np.ndarray:
    """TP / (TP + FP) per class; NaN where the class is never predicted."""
    return _ratio(c.tp, c.tp + c.fp)


def mean_precision_terms(precision_values: np.ndarray, dice_values: np.ndarray) -> np.ndarray:
    """Each class's term in the mean precision over classes: its precision, 0 for a class
    never predicted but present in the reference, NaN (left out of the mean) for a class absent
    from both. This is torchmetrics' and scikit-learn's macro precision with zero_division=0
    (their macro mean covers the classes present in the reference or the prediction): a model
    that never predicts a class cannot lift the mean by leaving it out. Works on any shape
    (per class, per draw x class)."""
    present = ~np.isnan(dice_values)
    return np.where(np.isnan(precision_values) & present, 0.0, precision_values)


def recall(c: Counts) -> np.ndarray:
    """TP / (TP + FN) per class (sensitivity); NaN where the class is absent from the reference."""
    return _ratio(c.tp, c.tp + c.fn)


def pixel_accuracy(c: Counts) -> float:
    """Correct pixels / counted pixels, over all classes background included."""
    total = c.tp.sum() + c.fn.sum()
    return float(c.tp.sum() / total) if total else float("nan")


def nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN when there are none (without numpy's warning)."""
    values = np.asarray(values, dtype=np.float64)
    keep = values[~np.isnan(values)]
    return float(keep.mean()) if keep.size else float("nan")


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
