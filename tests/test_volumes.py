"""Volumes as training slices: standardisation by hand and as MONAI does it, the slice axis,
the cache (decoded once, reused while files are unchanged)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from segtool.core.volumes import from_slices, slice_axis, standardize, to_slices
from segtool.sources.nifti import load_case
from segtool.sources.volume_folder import read_volume_dataset
from segtool.train.volumes import build_cache, case_fingerprint
from tests.volumes import affine, make_case, make_msd


def test_standardize_by_hand():
    image = np.zeros((2, 2, 1, 2), np.float32)
    image[..., 0] = [[[0.0], [2.0]], [[4.0], [6.0]]]  # non-zero: 2, 4, 6 -> mean 4, std sqrt(8/3)
    image[..., 1] = 5.0  # constant channel: std taken as 1
    out, stats = standardize(image)
    std = np.sqrt(8 / 3)
    np.testing.assert_allclose(out[..., 0].ravel(), [0.0, -2 / std, 0.0, 2 / std], rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], 0.0)
    assert stats[0] == pytest.approx({"mean": 4.0, "std": std, "voxels": 3})
    assert stats[1] == pytest.approx({"mean": 5.0, "std": 1.0, "voxels": 4})


def test_standardize_matches_monai_nonzero_channel_wise():
    from monai.transforms import NormalizeIntensity

    image, _ = make_case(3)
    out, _ = standardize(image)
    channel_first = torch.from_numpy(np.moveaxis(image, -1, 0).copy())
    expected = NormalizeIntensity(nonzero=True, channel_wise=True)(channel_first)
    np.testing.assert_allclose(out, np.moveaxis(np.asarray(expected), 0, -1), atol=1e-5)
    inside = image[..., 0] != 0
    assert abs(out[..., 0][inside].mean()) < 1e-5
    assert out[..., 0][inside].std() == pytest.approx(1.0, abs=1e-5)
    assert (out[~inside] == 0).all()


def test_slice_axis_follows_the_orientation():
    ras = affine()
    assert [slice_axis(ras, a) for a in ("sagittal", "coronal", "axial")] == [0, 1, 2]
    # voxel axes stored as (S, A, R): axial is the first voxel axis
    sar = np.zeros((4, 4))
    sar[0, 2] = sar[1, 1] = sar[2, 0] = 1.0
    sar[3, 3] = 1
    assert slice_axis(sar, "axial") == 0
    assert slice_axis(sar, "sagittal") == 2


def test_slices_round_trip():
    volume = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    for axis in range(3):
        slices = to_slices(volume, axis)
        assert slices.shape[0] == volume.shape[axis] and slices.shape[1] == 5
        label = volume[..., 0]
        np.testing.assert_array_equal(from_slices(to_slices(label, axis), axis), label)


def test_cache_decodes_once_and_matches_the_volume(tmp_path, monkeypatch):
    root = make_msd(tmp_path / "mri", n=2, test=0)
    ds = read_volume_dataset(root)
    cached = build_cache(ds, list(ds.cases), tmp_path / "cache")
    vol = load_case(ds.cases[0], 2, ds.class_map)
    expected, stats = standardize(vol.image)
    entry = cached[0]
    assert isinstance(entry.image, np.memmap)
    assert entry.image.shape == (8, 2, 32, 32)  # axial slices of 32 x 32 x 8, 2 channels
    np.testing.assert_allclose(entry.image, to_slices(expected, 2), atol=2e-3)
    np.testing.assert_array_equal(entry.label_volume(), vol.label)
    assert entry.meta["statistics"] == stats  # JSON keeps float64 exactly
    assert entry.fg_slices == [s for s in range(8) if vol.label[:, :, s].any()]
    assert entry.spacing == pytest.approx((0.9, 1.1, 3.0))

    # a second build decodes nothing
    import segtool.train.volumes as volumes

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(volumes, "load_case", fail)
    again = build_cache(ds, list(ds.cases), tmp_path / "cache")
    np.testing.assert_array_equal(again[1].label, cached[1].label)
    # a changed file gets a new fingerprint, so it is decoded again
    path = ds.cases[1].images[0]
    old = case_fingerprint(ds.cases[1], "axial")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert case_fingerprint(ds.cases[1], "axial") != old
    assert case_fingerprint(ds.cases[0], "axial") != case_fingerprint(ds.cases[0], "coronal")
    with pytest.raises(AssertionError, match="decoded again"):
        build_cache(ds, list(ds.cases), tmp_path / "cache")


def test_slice_dataset_crops_and_oversamples_foreground(tmp_path):
    from segtool.train.slices import VolumeSliceDataset

    root = make_msd(tmp_path / "mri", n=2, test=0)
    ds = read_volume_dataset(root)
    cached = build_cache(ds, list(ds.cases), tmp_path / "cache")
    plain = VolumeSliceDataset(cached, ds.class_map)
    assert len(plain) == 16
    item = plain[9]  # second volume, slice 1
    assert item["stem"] == cached[1].case and item["image"].shape == (2, 32, 32)
    np.testing.assert_array_equal(item["mask"].numpy(), cached[1].label[1])
    np.testing.assert_allclose(item["image"].numpy(), cached[1].image[1].astype(np.float32))
    empty = [i for i, (v, s) in enumerate(plain.index) if s not in cached[v].fg_slices]
    assert empty, "the synthetic volumes have slices without tumour"
    always = VolumeSliceDataset(cached, ds.class_map, crop=16, fg_crop=1.0, seed=3)
    for i in empty:
        sample = always[i]
        assert sample["image"].shape == (2, 16, 16)
        assert (sample["mask"] > 0).any()  # a foreground slice, the crop centred on tumour
    never = VolumeSliceDataset(cached, ds.class_map, crop=16, fg_crop=0.0, seed=3)
    assert not any((never[i]["mask"] > 0).any() for i in empty)
