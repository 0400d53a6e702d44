"""Object-level scores: panoptic quality and detection against MONAI, lesion-wise Dice and HD95
against a slow re-implementation of the BraTS 2023 code written here, on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segtool.core.distances import worst_distance
from segtool.core.lesions import LesionScore, lesion_wise
from segtool.core.objects import (
    Matches,
    ObjectOptions,
    class_masks,
    detection,
    label_components,
    match_objects,
    panoptic,
)
from tests.test_volume_metrics import monai_hd95


def instance_map(rng: np.random.Generator, shape: tuple, n: int) -> np.ndarray:
    """`n` random boxes painted with ids 1..n in order (later ones cover earlier ones)."""
    ids = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        hi = [
            int(rng.integers(a + 1, min(s, a + 1 + max(2, s // 2)) + 1))
            for a, s in zip(lo, shape, strict=True)
        ]
        ids[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = i
    return ids


def perturbed(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """A prediction near `ids`: shifted by a pixel, some ids dropped, noise and new boxes."""
    axis = int(rng.integers(0, ids.ndim))
    pred = np.roll(ids, int(rng.integers(-1, 2)), axis=axis)
    for dropped in rng.choice(np.arange(1, 9), size=int(rng.integers(0, 3))):
        pred[pred == dropped] = 0
    extra = instance_map(rng, ids.shape, int(rng.integers(0, 3)))
    pred = np.where(extra > 0, extra + 20, pred)
    noise = rng.random(ids.shape) < 0.02
    pred[noise] = rng.integers(0, 30, int(noise.sum()))
    return pred.astype(np.int32)


def monai_confusion(ref: np.ndarray, pred: np.ndarray, threshold: float) -> np.ndarray:
    from monai.metrics import compute_panoptic_quality

    out = compute_panoptic_quality(
        torch.from_numpy(pred),
        torch.from_numpy(ref),
        match_iou_threshold=threshold,
        output_confusion_matrix=True,
    )
    return out.double().numpy()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    three_d=st.booleans(),
    threshold=st.sampled_from([0.5, 0.3, 0.6, 0.75, 0.2]),
)
def test_panoptic_counts_agree_with_monai(seed, three_d, threshold):
    rng = np.random.default_rng(seed)
    shape = (9, 11, 7) if three_d else (24, 30)
    ref = instance_map(rng, shape, int(rng.integers(0, 8)))
    pred = perturbed(rng, ref)
    expected = monai_confusion(ref, pred, threshold)
    m = match_objects(ref, pred, threshold, inclusive=False)
    assert (m.tp, m.fp, m.fn) == tuple(int(v) for v in expected[:3])
    # MONAI computes each IoU in float32
    assert m.iou_sum == pytest.approx(expected[3], rel=1e-6, abs=1e-6)
    pq, sq, rq = panoptic(m)
    if m.tp:
        den = m.tp + 0.5 * m.fp + 0.5 * m.fn
        assert pq == pytest.approx(expected[3] / (den + 1e-6), rel=1e-5)
        assert sq * rq == pytest.approx(pq, rel=1e-12)


def test_panoptic_empty_cases_are_nan_where_monai_says_zero():
    empty = np.zeros((5, 5), np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 4
    assert all(math.isnan(v) for v in panoptic(match_objects(empty, empty, inclusive=False)))
    pq, sq, rq = panoptic(match_objects(one, empty, inclusive=False))
    assert (pq, rq) == (0.0, 0.0) and math.isnan(sq)
    assert monai_confusion(empty, empty, 0.5).tolist() == [0, 0, 0, 0]


def test_panoptic_hand_table():
    ref = np.zeros((10, 10), np.int32)
    pred = np.zeros_like(ref)
    ref[0:2, 0:2] = 7  # 4 px, predicted exactly: IoU 1
    pred[0:2, 0:2] = 3
    ref[5:7, 5:8] = 2  # 6 px; prediction covers 4 of them and 1 more: IoU 4/7
    pred[5:7, 5:7] = 9
    pred[4, 5] = 9
    pred[9, 9] = 1  # a false positive
    m = match_objects(ref, pred, inclusive=False)
    assert m == Matches(tp=2, fp=1, fn=0, iou_sum=pytest.approx(1 + 4 / 7))
    pq, sq, rq = panoptic(m)
    assert sq == pytest.approx((1 + 4 / 7) / 2)
    assert rq == pytest.approx(2 / 2.5)
    assert pq == pytest.approx((1 + 4 / 7) / 2.5)


def test_detection_threshold_is_inclusive_and_one_to_one():
    ref = np.zeros((4, 8), bool)
    ref[0, 0:2] = True  # 2 px
    halves = np.zeros((4, 8), np.int32)
    halves[0, 0] = 1  # each half of the reference: IoU exactly 1/2
    halves[0, 1] = 2
    ids, _ = label_components(ref)
    at_half = match_objects(ids, halves, 0.5)
    assert (at_half.tp, at_half.fp, at_half.fn) == (1, 1, 0)  # one match, not two
    assert detection(at_half) == (0.5, 1.0, pytest.approx(2 / 3))
    strict = match_objects(ids, halves, 0.5, inclusive=False)
    assert (strict.tp, strict.fp, strict.fn) == (0, 2, 1)


def test_detection_empty_cases():
    none = Matches()
    assert all(math.isnan(v) for v in detection(none))
    p, r, f1 = detection(Matches(fp=2))
    assert (p, f1) == (0.0, 0.0) and math.isnan(r)
    p, r, f1 = detection(Matches(fn=1))
    assert (r, f1) == (0.0, 0.0) and math.isnan(p)


def test_components_connectivity():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = True  # corner neighbours
    assert label_components(mask)[1] == 1
    assert label_components(mask, connectivity=1)[1] == 2
    with pytest.raises(ValueError, match="connectivity 3"):
        label_components(mask, connectivity=3)


def test_class_masks_ignore_only_where_the_reference_says():
    ref = np.array([[1, 255, 0, 1]], np.uint8)
    pred = np.array([[255, 1, 1, 1]], np.uint8)
    ((r, p),) = class_masks(ref, pred, [1], 255)
    assert r.tolist() == [[True, False, False, True]]
    assert p.tolist() == [[False, False, True, True]]  # a predicted 255 predicts nothing


# --- lesion-wise: a slow reference written from the BraTS 2023 code -------------------------


def slow_lesion_wise(ref, pred, spacing, dilation, min_size) -> tuple[float, float, int, int, int]:
    """The BraTS 2023 ``get_lesion_wise_score`` / ``get_lesion_wise_results`` steps on whole
    arrays: full-connectivity components, rank-2 dilation, lesions combined by the dilation,
    HD95 from MONAI (inf -> the array diagonal), the mean over lesions and false positives."""
    full = ndimage.generate_binary_structure(ref.ndim, ref.ndim)
    grow = ndimage.generate_binary_structure(ref.ndim, 2)

    def dilate(mask):
        return ndimage.binary_dilation(mask, grow, iterations=dilation) if dilation else mask

    worst = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing, strict=True)))
    pred_cc, _ = ndimage.label(pred, full)
    dil_cc, n_dil = ndimage.label(dilate(ref), full)
    combined = np.zeros_like(dil_cc)
    for comp in range(1, n_dil + 1):
        combined[(dil_cc == comp) & ref] = comp
    tp_parts, rows = [], []
    for comp in range(1, combined.max() + 1):
        lesion = combined == comp
        if not lesion.any():
            continue
        hits = np.unique(pred_cc * dilate(lesion))
        hits = hits[hits != 0]
        tp_parts += list(hits)
        matched = np.isin(pred_cc, hits)
        dice = 2 * (matched & lesion).sum() / (matched.sum() + lesion.sum())
        hd = monai_hd95(lesion, matched, spacing) if hits.size else worst
        rows.append((len(hits), lesion.sum() * np.prod(spacing), dice, hd))
    fp = len(np.unique(pred_cc[~np.isin(pred_cc, [*tp_parts, 0])]))
    kept = [r for r in rows if r[1] > min_size]
    n = len(kept) + fp
    if not n:
        return math.nan, math.nan, 0, 0, 0  # BraTS writes 1 and 0 here; segtool: NaN
    dice = sum(r[2] for r in kept) / n
    hd = (sum(r[3] for r in kept) + fp * worst) / n
    return dice, hd, len(kept), sum(1 for r in kept if r[0] == 0), fp


def box(shape, *slices) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for s in slices:
        mask[s] = True
    return mask


S = (40, 40)
WORST = worst_distance(S, (1, 1))
CASES = {
    # one of two lesions found exactly, the other missed
    "missed lesion": (
        box(S, np.s_[2:10, 2:10], np.s_[25:35, 25:35]),
        box(S, np.s_[2:10, 2:10]),
        dict(dice=0.5, hd95=WORST / 2, lesions=2, missed=1, false_positives=0),
    ),
    # one lesion predicted as two halves: both match it, none is a false positive
    "split prediction": (
        box(S, np.s_[10:20, 10:20]),
        box(S, np.s_[10:20, 10:14], np.s_[10:20, 16:20]),
        dict(dice=2 * 80 / 180, lesions=1, missed=0, false_positives=0),
    ),
    # two lesions 3 px apart are one after the dilation; the prediction finds one of them
    "merged by dilation": (
        box(S, np.s_[10:18, 5:13], np.s_[10:18, 16:24]),
        box(S, np.s_[10:18, 5:13]),
        dict(dice=2 * 64 / 192, lesions=1, missed=0, false_positives=0),
    ),
    # a lesion found exactly, and a false positive far away
    "false positive far away": (
        box(S, np.s_[2:10, 2:10]),
        box(S, np.s_[2:10, 2:10], np.s_[30:38, 30:38]),
        dict(dice=0.5, hd95=WORST / 2, lesions=1, missed=0, false_positives=1),
    ),
    "empty reference": (
        box(S),
        box(S, np.s_[2:10, 2:10], np.s_[30:38, 30:38]),
        dict(dice=0.0, hd95=WORST, lesions=0, missed=0, false_positives=2),
    ),
    "empty prediction": (
        box(S, np.s_[2:10, 2:10], np.s_[25:35, 25:35]),
        box(S),
        dict(dice=0.0, hd95=WORST, lesions=2, missed=2, false_positives=0),
    ),
    # a lesion of 4 px is left out; the component that finds it is no false positive
    "small lesion": (
        box(S, np.s_[2:10, 2:10], np.s_[30:32, 30:32]),
        box(S, np.s_[2:10, 2:10], np.s_[30:32, 30:33]),
        dict(dice=1.0, hd95=0.0, lesions=1, missed=0, false_positives=0, small=1),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_lesion_wise_hand_cases(name):
    ref, pred, expected = CASES[name]
    got = lesion_wise(ref, pred, options=ObjectOptions(min_size=10))
    for key, value in expected.items():
        assert getattr(got, key) == pytest.approx(value), key
    slow = slow_lesion_wise(ref, pred, (1, 1), 3, 10)
    assert (got.dice, got.hd95) == (pytest.approx(slow[0]), pytest.approx(slow[1]))
    assert (got.lesions, got.missed, got.false_positives) == slow[2:]


def test_lesion_wise_min_size_leaves_out_lesions_of_that_size_or_less():
    ref, pred, _ = CASES["small lesion"]  # lesions of 64 and 4 px
    assert (
        lesion_wise(ref, pred, options=ObjectOptions(min_size=4)).small,
        lesion_wise(ref, pred, options=ObjectOptions(min_size=4)).lesions,
    ) == (1, 1)
    at_three = lesion_wise(ref, pred, options=ObjectOptions(min_size=3))
    assert (at_three.small, at_three.lesions) == (0, 2)
    assert at_three.dice == pytest.approx((1 + 2 * 4 / 10) / 2)
    # sizes are in the spacing's unit: 4 px of 2 x 1 mm are 8 mm^2
    assert lesion_wise(ref, pred, (2.0, 1.0), ObjectOptions(min_size=7)).lesions == 2


def test_lesion_wise_without_dilation_keeps_near_lesions_apart():
    ref, pred, _ = CASES["merged by dilation"]
    got = lesion_wise(ref, pred, options=ObjectOptions(dilation=0, min_size=10))
    assert (got.lesions, got.missed, got.dice) == (2, 1, 0.5)


def test_lesion_wise_both_empty_is_nan_and_counts_nothing():
    empty = np.zeros(S, bool)
    got = lesion_wise(empty, empty)
    assert math.isnan(got.dice) and math.isnan(got.hd95)
    assert got == LesionScore(got.dice, got.hd95, 0, 0, 0, 0)


def ellipsoids(rng: np.random.Generator, shape: tuple, n: int) -> list[np.ndarray]:
    """`n` random ellipsoids of radius 0.6 to 4 voxels, each its own mask."""
    grid = np.indices(shape)
    out = []
    for _ in range(n):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(0.6, 4.0, len(shape))
        out.append(
            sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        )
    return out


def union(masks: list[np.ndarray], shape: tuple) -> np.ndarray:
    return np.any(masks, axis=0) if masks else np.zeros(shape, bool)


@pytest.mark.parametrize("seed", range(16))
def test_lesion_wise_agrees_with_the_slow_reference_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (20, 24, 16) if seed % 2 else (40, 48)  # volumes (SciPy), images (OpenCV)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 2.0, len(shape)))
    parts = ellipsoids(rng, shape, int(rng.integers(0, 9)))
    ref = union(parts, shape)
    found = [p for p in parts if rng.random() < 0.7]  # the others are missed
    pred = union(found, shape)
    if rng.random() < 0.5:  # (iterations=0 would dilate until nothing changes)
        pred = ndimage.binary_dilation(pred)
    pred = np.roll(pred, int(rng.integers(-1, 2)), axis=int(rng.integers(0, len(shape))))
    pred |= union(ellipsoids(rng, shape, int(rng.integers(0, 3))), shape)  # false positives
    pred ^= rng.random(shape) < 0.0005  # stray voxels: false positives
    dilation, min_size = int(rng.integers(0, 4)), float(rng.choice([0, 5, 30]))
    got = lesion_wise(ref, pred, spacing, ObjectOptions(dilation=dilation, min_size=min_size))
    slow = slow_lesion_wise(ref, pred, spacing, dilation, min_size)
    assert got.dice == pytest.approx(slow[0], rel=1e-9, nan_ok=True)
    assert got.hd95 == pytest.approx(slow[1], rel=1e-6, nan_ok=True)
    assert (got.lesions, got.missed, got.false_positives) == slow[2:]
