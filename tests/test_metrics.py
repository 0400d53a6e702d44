"""Metrics: hand tables, a direct numpy oracle, torchmetrics and MONAI on random masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segtool.core.distances import hd95, hd95_per_class
from segtool.core.metrics import (
    MaskValueError,
    check_values,
    confusion_matrix,
    count,
    dice,
    iou,
    nanmean,
    pixel_accuracy,
    precision,
    recall,
)

IGN = 255


def scores(ref, pred, k=2):
    c = count(np.array(ref, dtype=np.uint8), np.array(pred, dtype=np.uint8), k, IGN)
    return c, dice(c), iou(c)


# --- hand tables: Dice = 2|A∩B| / (|A| + |B|), IoU = |A∩B| / |A∪B| -------------------------


@pytest.mark.parametrize(
    ("ref", "pred", "tp", "fp", "fn", "d", "j"),
    [
        ([1, 1, 0, 0], [1, 0, 1, 0], 1, 1, 1, 2 / 4, 1 / 3),  # half overlap
        ([1, 1, 1, 0], [1, 1, 0, 0], 2, 0, 1, 4 / 5, 2 / 3),  # prediction inside reference
        ([1, 1, 0, 0], [1, 1, 0, 0], 2, 0, 0, 1.0, 1.0),  # perfect
        ([0, 0, 0, 0], [1, 0, 0, 0], 0, 1, 0, 0.0, 0.0),  # prediction only
        ([1, 0, 0, 0], [0, 0, 0, 0], 0, 0, 1, 0.0, 0.0),  # reference only
        ([0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0, math.nan, math.nan),  # both empty: NaN
        ([255, 255, 1, 0], [1, 1, 1, 0], 1, 0, 0, 1.0, 1.0),  # reference ignore: not counted
        ([1, 255, 255, 255], [255, 1, 1, 1], 0, 0, 1, 0.0, 0.0),  # predicted ignore: a miss
        ([1, 1, 0, 0], [1, 255, 255, 0], 1, 0, 1, 2 / 3, 1 / 2),  # abstaining cannot help
        ([255, 255, 0, 0], [255, 255, 0, 0], 0, 0, 0, math.nan, math.nan),  # both ignore
    ],
)
def test_dice_iou_hand_table(ref, pred, tp, fp, fn, d, j):
    c, dc, jc = scores(ref, pred)
    assert (c.tp[1], c.fp[1], c.fn[1]) == (tp, fp, fn)
    expected_abstained = sum(r != 255 and p == 255 for r, p in zip(ref, pred, strict=True))
    assert c.abstained == expected_abstained
    np.testing.assert_equal(dc[1], d)
    np.testing.assert_equal(jc[1], j)


def test_precision_recall_accuracy_hand_table():
    c, _, _ = scores([1, 1, 1, 0, 0, 2], [1, 0, 2, 2, 0, 2], k=3)
    np.testing.assert_allclose(precision(c), [1 / 2, 1 / 1, 1 / 3])
    np.testing.assert_allclose(recall(c), [1 / 2, 1 / 3, 1 / 1])
    assert pixel_accuracy(c) == 3 / 6


def test_counts_are_the_confusion_matrix():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, (30, 30)).astype(np.uint8)
    pred = rng.integers(0, 4, (30, 30)).astype(np.uint8)
    ref[:3] = IGN
    pred[5:8] = IGN
    cm = confusion_matrix(ref, pred, 4, IGN)
    c = count(ref, pred, 4, IGN)
    np.testing.assert_array_equal(c.tp, np.diag(cm))
    np.testing.assert_array_equal(c.fp, cm[:, :4].sum(axis=0) - np.diag(cm))
    np.testing.assert_array_equal(c.fn, cm.sum(axis=1) - np.diag(cm))
    assert c.abstained == cm[:, 4].sum() > 0


@settings(max_examples=120, deadline=None)
@given(
    k=st.integers(1, 9),
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_counts_of_masks_without_ignore_pixels_are_the_confusion_matrix(k, h, w, seed):
    # Masks holding class ids only take the comparison path for small K, the histogram above
    # it: both must give the confusion matrix's numbers.
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, k, (h, w)).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < 0.7, ref, rng.integers(0, k, (h, w))).astype(np.uint8)
    cm = confusion_matrix(ref, pred, k, IGN)
    c = count(ref, pred, k, IGN)
    np.testing.assert_array_equal(c.tp, np.diag(cm))
    np.testing.assert_array_equal(c.fp, cm[:, :k].sum(axis=0) - np.diag(cm))
    np.testing.assert_array_equal(c.fn, cm.sum(axis=1) - np.diag(cm))
    assert c.abstained == cm[:, k].sum() == 0


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(1, 17),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    ignore=st.sampled_from([255, 200]),
)
def test_counts_with_ignore_pixels_on_either_side_are_the_confusion_matrix(k, h, w, seed, ignore):
    # Up to K = 15 the pairs are counted as one byte each by OpenCV's histogram (the
    # reference's ignore pixels as the byte 255), above by bincounts: both must give the
    # matrix's numbers, whatever the ignore value.
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, k, (h, w)).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < 0.6, ref, rng.integers(0, k, (h, w))).astype(np.uint8)
    ref[rng.random((h, w)) < 0.15] = ignore
    pred[rng.random((h, w)) < 0.15] = ignore
    cm = confusion_matrix(ref, pred, k, ignore)
    c = count(ref, pred, k, ignore)
    np.testing.assert_array_equal(c.tp, np.diag(cm))
    np.testing.assert_array_equal(c.fp, cm[:, :k].sum(axis=0) - np.diag(cm))
    np.testing.assert_array_equal(c.fn, cm.sum(axis=1) - np.diag(cm))
    assert c.abstained == cm[:, k].sum()


def test_values_outside_the_class_map():
    check_values(np.array([[0, 1, 255]], dtype=np.uint8), 2, IGN)
    with pytest.raises(MaskValueError, match=r"value 7 is neither a class id \(0..2\)"):
        check_values(np.array([[0, 7, 255]], dtype=np.uint8), 3, IGN)
    with pytest.raises(MaskValueError, match="value 254"):
        check_values(np.array([[254]], dtype=np.uint8), 3, IGN)


def test_sixteen_bit_counts():
    ref = np.array([[300, 300, 65535]], dtype=np.uint16)
    pred = np.array([[300, 2, 300]], dtype=np.uint16)
    c = count(ref, pred, 301, 65535)
    assert (c.tp[300], c.fp[2], c.fn[300]) == (1, 1, 1)


def test_nanmean_skips_nan():
    assert nanmean(np.array([1.0, np.nan, 0.5])) == 0.75
    assert math.isnan(nanmean(np.array([np.nan])))


# --- oracles on random masks -------------------------------------------------------------------


masks = st.integers(1, 20).flatmap(
    lambda h: st.integers(1, 20).flatmap(
        lambda w: st.tuples(
            arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 3, 255])),
            arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 3, 255])),
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(pair=masks)
def test_pooled_scores_match_a_direct_computation(pair):
    ref, pred = pair
    c = count(ref, pred, 4, IGN)
    valid = ref != IGN  # only the reference says which pixels are not scored
    for k in range(4):
        a, b = (ref == k) & valid, (pred == k) & valid
        inter, total = (a & b).sum(), a.sum() + b.sum()
        expected_dice = 2 * inter / total if total else math.nan
        expected_iou = inter / (a | b).sum() if total else math.nan
        np.testing.assert_allclose(dice(c)[k], expected_dice)
        np.testing.assert_allclose(iou(c)[k], expected_iou)


@settings(max_examples=150, deadline=None)
@given(pair=masks)
def test_the_fast_and_the_general_counting_paths_agree(pair):
    """8-bit masks with K <= 15 are counted by OpenCV's histogram; 16-bit masks (or K >= 16)
    by bincounts. Both must give the same counts, ignore pixels on either side included."""
    ref, pred = pair
    fast = count(ref, pred, 4, IGN)
    wide = count(ref.astype(np.uint16), pred.astype(np.uint16), 4, IGN)
    many = count(ref, pred, 16, IGN)  # K = 16: the general path on 8-bit masks
    for other in (wide.padded(16), many):
        for a, b in zip(fast.padded(16).astuple(), other.astuple(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert fast.abstained == other.abstained


def test_pooled_scores_match_torchmetrics():
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    rng = np.random.default_rng(3)
    f1 = MulticlassF1Score(num_classes=4, average="none", ignore_index=IGN)
    jac = MulticlassJaccardIndex(num_classes=4, average="none", ignore_index=IGN)
    total = None
    for _ in range(5):
        ref = rng.integers(0, 4, (24, 32)).astype(np.uint8)
        pred = np.where(rng.random((24, 32)) < 0.7, ref, rng.integers(0, 4, (24, 32))).astype(
            np.uint8
        )
        ref[rng.random((24, 32)) < 0.1] = IGN
        c = count(ref, pred, 4, IGN)
        total = c if total is None else total + c
        f1.update(torch.from_numpy(pred).long(), torch.from_numpy(ref).long())
        jac.update(torch.from_numpy(pred).long(), torch.from_numpy(ref).long())
    np.testing.assert_allclose(dice(total), f1.compute().numpy(), rtol=1e-6)
    np.testing.assert_allclose(iou(total), jac.compute().numpy(), rtol=1e-6)


# --- HD95 ------------------------------------------------------------------------------------


def test_hd95_hand_table():
    a = np.zeros((5, 9), dtype=bool)
    b = np.zeros((5, 9), dtype=bool)
    a[2, 1], b[2, 4] = True, True  # single pixels, 3 apart
    assert hd95(a, b) == 3.0
    b[2, 4], b[0, 5] = False, True  # now sqrt(2² + 4²) apart
    assert hd95(a, b) == pytest.approx(math.sqrt(20))


def test_hd95_empty_cases():
    a = np.zeros((3, 4), dtype=bool)
    b = a.copy()
    b[1, 1] = True
    assert math.isnan(hd95(a, a))
    assert hd95(a, b) == 5.0 == hd95(b, a)  # the diagonal of a 3 x 4 image


def test_hd95_ignores_ignore_pixels():
    ref = np.zeros((6, 6), dtype=np.uint8)
    pred = np.zeros((6, 6), dtype=np.uint8)
    ref[1:3, 1:3] = 1
    pred[1:3, 1:3] = 1
    pred[5, 5] = 1
    assert hd95_per_class(ref, pred, [1], IGN)[0] > 0
    ref[5, 5] = IGN  # the stray prediction pixel is on an ignore pixel
    assert hd95_per_class(ref, pred, [1], IGN)[0] == 0.0


def test_hd95_a_predicted_ignore_value_predicts_no_class():
    ref = np.zeros((6, 6), dtype=np.uint8)
    ref[1:3, 1:3] = 1
    ref[5, 5] = 1  # a second object, 3 rows and columns away
    for abstain in (IGN, 0, 2):  # ignore, background and another class score the same
        pred = np.zeros((6, 6), dtype=np.uint8)
        pred[1:3, 1:3] = 1
        pred[5, 5] = abstain
        # boundary distances: 4 zeros each way, then the missed pixel at sqrt(3² + 3²)
        expected = np.percentile([0, 0, 0, 0, math.sqrt(18)], 95)
        assert hd95_per_class(ref, pred, [1], IGN)[0] == pytest.approx(expected)


def _monai_hd95(a: np.ndarray, b: np.ndarray) -> float:
    from monai.metrics import HausdorffDistanceMetric

    metric = HausdorffDistanceMetric(percentile=95, include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metric(
            torch.from_numpy(b[None, None]).float(), torch.from_numpy(a[None, None]).float()
        )
    return float(value[0, 0])


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    h=st.integers(2, 48),
    w=st.integers(2, 48),
    density=st.floats(0.01, 0.7),
    grow=st.integers(0, 3),
)
def test_hd95_matches_monai(data, h, w, density, grow):
    from scipy import ndimage

    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    a = rng.random((h, w)) < density * 0.3
    b = rng.random((h, w)) < density
    if grow:
        a = ndimage.binary_dilation(a, iterations=grow)
    if not a.any() or not b.any():
        return
    # MONAI returns float32 and takes its percentile with torch.quantile in float32: a draw of
    # 38 x 47 masks (seed 6955, density 0.5, grow 1) differs by 4e-6 relative from the float64
    # value, which segtool and a k-d tree both give.
    np.testing.assert_allclose(hd95(a, b), _monai_hd95(a, b), rtol=1e-5, atol=1e-6)


def test_scipy_and_opencv_distance_paths_agree(monkeypatch):
    import segtool.core.distances as m

    rng = np.random.default_rng(7)
    for _ in range(10):
        a = rng.random((40, 50)) < 0.05
        b = rng.random((40, 50)) < 0.05
        fast = hd95(a, b)
        monkeypatch.setattr(m, "_EXACT_LIMIT", 0)  # force SciPy's float64 transform
        assert hd95(a, b) == fast
        monkeypatch.undo()
