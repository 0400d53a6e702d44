"""Normalised surface Dice against MONAI's compute_surface_dice, and by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segtool.core.surface import surface_dice, surface_dice_per_class
from tests.test_volume_metrics import blobs


def monai_nsd(ref: np.ndarray, pred: np.ndarray, tolerance: float, spacing) -> float:
    from monai.metrics import compute_surface_dice

    def onehot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compute_surface_dice(onehot(pred), onehot(ref), [tolerance], spacing=list(spacing))
    return float(out[0, 0])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    three_d=st.booleans(),
    tolerance=st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.7]),
    anisotropic=st.booleans(),
)
def test_surface_dice_agrees_with_monai(seed, three_d, tolerance, anisotropic):
    rng = np.random.default_rng(seed)
    shape = (14, 17, 11) if three_d else (30, 37)
    spacing = (
        tuple(float(s) for s in rng.uniform(0.4, 3.0, len(shape)))
        if anisotropic
        else (1.0,) * len(shape)
    )
    ref = blobs(rng, shape, int(rng.integers(0, 4)))
    pred = ndimage.binary_dilation(ref) if rng.random() < 0.5 else blobs(rng, shape, 2)
    pred = np.roll(pred, int(rng.integers(-2, 3)), axis=0) ^ (rng.random(shape) < 0.01)
    got = surface_dice(ref, pred, tolerance, spacing)
    expected = monai_nsd(ref, pred, tolerance, spacing)
    # MONAI returns float32
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7, nan_ok=True)


def test_surface_dice_hand_values_and_empty_cases():
    ref = np.zeros((6, 8), bool)
    ref[1:4, 1:4] = True  # 3 x 3: 8 boundary pixels
    pred = np.roll(ref, 2, axis=1)  # 2 px to the right
    # within 1 px, on each side: the shared column (3 px) and the two corners of the column
    # beside it (the centre pixel is no boundary); the far column is 2 px away
    assert surface_dice(ref, pred, 1.0) == pytest.approx(10 / 16)
    assert surface_dice(ref, pred, 2.0) == 1.0  # <= counts
    assert surface_dice(ref, pred, 1.0, (1.0, 0.5)) == 1.0  # 2 px of 0.5 mm: 1 mm
    empty = np.zeros_like(ref)
    assert surface_dice(ref, empty, 5.0) == 0.0
    assert math.isnan(surface_dice(empty, empty, 5.0))
    with pytest.raises(ValueError, match="tolerance -1"):
        surface_dice(ref, pred, -1.0)


def test_surface_dice_per_class_leaves_out_only_reference_ignore():
    ref = np.zeros((6, 8), np.uint8)
    ref[1:4, 1:4] = 1
    ref[:, 6:] = 255
    pred = ref.copy()
    pred[pred == 255] = 1  # predicted where the reference is ignore: left out
    pred[4, 1] = 255  # a predicted ignore value predicts nothing (no class 1 here)
    assert surface_dice_per_class(ref, pred, [1], 255, 0.0).tolist() == [1.0]
    pred[1, 1] = 255  # abstaining over a reference pixel loses it
    assert surface_dice_per_class(ref, pred, [1], 255, 0.0)[0] < 1.0
