"""3-D scores: overlap from the metrics module's counts (numpy oracle), HD95 in mm vs MONAI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from segtool.core.distances import boundary, hd95, hd95_per_class, worst_distance
from segtool.core.metrics import count, dice, iou, precision, recall


def blobs(rng: np.random.Generator, shape: tuple, n: int) -> np.ndarray:
    """A union of `n` random ellipsoids."""
    grid = np.indices(shape)
    mask = np.zeros(shape, bool)
    for _ in range(n):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(1.5, max(shape) / 4, len(shape))
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
    return mask


def monai_hd95(ref: np.ndarray, pred: np.ndarray, spacing) -> float:
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]),
            torch.from_numpy(ref[None, None]),
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
    return float(out[0, 0])


@pytest.mark.parametrize("seed", range(12))
def test_hd95_in_mm_agrees_with_monai_on_random_anisotropic_volumes(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 40, 3))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 4.0, 3))
    ref = blobs(rng, shape, int(rng.integers(1, 4)))
    pred = (
        ndimage.binary_dilation(ref, iterations=int(rng.integers(0, 3)))
        if seed % 2
        else blobs(rng, shape, 2)
    )
    pred = pred ^ (rng.random(shape) < 0.02)  # stray voxels far from the surface
    if not ref.any() or not pred.any():
        pytest.skip("an empty mask: covered by the empty-case test")
    expected = monai_hd95(ref, pred, spacing)
    assert hd95(ref, pred, spacing) == pytest.approx(expected, rel=1e-6)


def test_hd95_two_d_pixel_engine_equals_the_point_engine(monkeypatch):
    import segtool.core.distances as distances

    rng = np.random.default_rng(3)
    for _ in range(5):
        ref, pred = blobs(rng, (40, 50), 3), blobs(rng, (40, 50), 2)
        pixels = hd95(ref, pred)  # OpenCV's distance transform
        monkeypatch.setattr(distances, "_pixel_grid", lambda scale: False)  # the k-d tree
        assert hd95(ref, pred) == pytest.approx(pixels, rel=1e-12)
        assert hd95(ref, pred, (1.0, 1.0)) == pytest.approx(pixels, rel=1e-12)
        monkeypatch.undo()


def test_hd95_in_mm_hand_value():
    # two single voxels 2 apart along the third axis, 3 mm slices: 6 mm both ways
    ref = np.zeros((3, 3, 5), bool)
    pred = np.zeros((3, 3, 5), bool)
    ref[1, 1, 1] = True
    pred[1, 1, 3] = True
    assert hd95(ref, pred, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    # spacing scales axes separately: 2 voxels along the first axis at 0.5 mm -> 1 mm
    pred2 = np.zeros_like(ref)
    pred2[2, 1, 1] = True
    ref2 = np.zeros_like(ref)
    ref2[0, 1, 1] = True
    assert hd95(ref2, pred2, (0.5, 1.0, 3.0)) == pytest.approx(1.0)


def test_empty_case_policy():
    shape, spacing = (4, 5, 6), (1.0, 2.0, 3.0)
    empty = np.zeros(shape, bool)
    full = np.zeros(shape, bool)
    full[1, 1, 1] = True
    assert math.isnan(hd95(empty, empty, spacing))
    diagonal = math.sqrt(4**2 + 10**2 + 18**2)
    assert worst_distance(shape, spacing) == pytest.approx(diagonal)
    assert hd95(full, empty, spacing) == pytest.approx(diagonal)
    assert hd95(empty, full, spacing) == pytest.approx(diagonal)


def test_boundary_is_mask_minus_scipy_erosion():
    rng = np.random.default_rng(1)
    mask = blobs(rng, (12, 14, 9), 3)
    mask[0] |= rng.random((14, 9)) < 0.5  # touching the array's edge
    expected = mask & ~ndimage.binary_erosion(mask)
    np.testing.assert_array_equal(boundary(mask), expected)


def test_per_class_removes_reference_ignore():
    ref = np.zeros((6, 6, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, 1] = 1
    pred[1:3, 1:3, 1] = 1
    pred[5, 5, 3] = 1  # a stray prediction where the reference says "ignore"
    ref[5, 5, 3] = 255
    out = hd95_per_class(ref, pred, [1, 2], 255, (1.0, 1.0, 2.0))
    assert out[0] == 0.0
    assert math.isnan(out[1])


def test_overlap_scores_in_3d_against_a_numpy_oracle():
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 4, (20, 18, 6)).astype(np.uint8)
    pred = rng.integers(0, 4, (20, 18, 6)).astype(np.uint8)
    c = count(ref, pred, 4, 255)
    for k in range(4):
        a, b = ref == k, pred == k
        inter = np.logical_and(a, b).sum()
        assert dice(c)[k] == pytest.approx(2 * inter / (a.sum() + b.sum()))
        assert iou(c)[k] == pytest.approx(inter / np.logical_or(a, b).sum())
        assert precision(c)[k] == pytest.approx(inter / b.sum())
        assert recall(c)[k] == pytest.approx(inter / a.sum())


def test_the_gallery_slice_of_an_image_with_nan_voxels_is_scaled_on_its_finite_ones(tmp_path):
    """A picture only (the scores never read the image): NaN voxels black, the rest scaled
    between the finite voxels' 1st and 99th percentiles, not all NaN."""
    import nibabel as nib

    from segtool.evaluate.nifti_reader import _grey

    volume = np.tile(np.linspace(0, 100, 101, dtype=np.float32), (3, 101, 1)).transpose(1, 2, 0)
    volume[0, 0, 1] = np.nan
    volume[5, 7, 1] = np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "c_0000.nii.gz")
    grey = _grey(tmp_path / "c_0000.nii.gz", 2, 1)
    plane = volume[:, :, 1]
    finite = plane[np.isfinite(plane)]
    low, high = np.percentile(finite, [1, 99])
    scaled = np.clip((np.nan_to_num(plane, posinf=0) - low) / (high - low), 0, 1)
    expected = (scaled * 255).astype(np.uint8)
    expected[~np.isfinite(plane)] = 0
    assert np.array_equal(grey, expected)
    assert grey[0, 0] == 0 and grey[5, 7] == 0 and grey.max() == 255
