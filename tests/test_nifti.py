"""NIfTI volume folders: both layouts read alike; every bad input is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segtool.core.errors import InvalidInputError, SegtoolError
from segtool.sources.nifti import check_cases, load_case, read_label
from segtool.sources.volume_folder import image_cases, read_volume_dataset
from tests.volumes import CHANNELS, LABELS, SPACING, affine, make_case, make_msd, make_nnunet, save


def test_msd_layout(tmp_path):
    ds = read_volume_dataset(make_msd(tmp_path, n=3, test=1))
    assert ds.layout == "msd"
    assert ds.channels == CHANNELS
    assert ds.class_map.names == LABELS
    assert [c.case for c in ds.cases] == ["BRATS_000", "BRATS_001", "BRATS_002"]
    assert [c.case for c in ds.test_cases] == ["BRATS_500"]
    check_cases(ds)
    vol = load_case(ds.cases[1], 2, ds.class_map)
    image, label = make_case(1)
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_array_equal(vol.label, label)
    assert vol.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(vol.affine, affine())


def test_nnunet_layout_reads_the_same_volumes(tmp_path):
    ds = read_volume_dataset(make_nnunet(tmp_path, n=2))
    assert ds.layout == "nnunet"
    assert ds.channels == CHANNELS
    assert ds.class_map.names == LABELS
    case = ds.cases[1]
    assert [p.name for p in case.images] == ["case01_0000.nii.gz", "case01_0001.nii.gz"]
    vol = load_case(case, 2, ds.class_map)
    image, label = make_case(1)
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_array_equal(vol.label, label)


def test_plain_nii_and_prediction_folders(tmp_path):
    image, _ = make_case(0)
    save(tmp_path / "a.nii", image)
    save(tmp_path / "b_0000.nii.gz", image[..., 0])
    save(tmp_path / "b_0001.nii.gz", image[..., 1])
    assert [c.case for c in image_cases(tmp_path, 2)] == ["a", "b_0000", "b_0001"]
    (tmp_path / "a.nii").unlink()
    cases = image_cases(tmp_path, 2)
    assert [(c.case, len(c.images)) for c in cases] == [("b", 2)]


def test_three_d_image_where_four_d_expected(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    image, _ = make_case(0)
    save(root / "imagesTr" / "BRATS_000.nii.gz", image[..., 0])
    with pytest.raises(
        InvalidInputError,
        match=r"BRATS_000.nii.gz: a 3-D image .* names 2 channels; the image must be 4-D",
    ):
        check_cases(read_volume_dataset(root))


def test_mismatched_affines(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    _, label = make_case(1)
    save(root / "labelsTr" / "BRATS_001.nii.gz", label, affine(spacing=(1.0, 1.1, 3.0)))
    with pytest.raises(InvalidInputError, match=r"labelsTr/BRATS_001.nii.gz: affine differs"):
        check_cases(read_volume_dataset(root))


def test_mismatched_shapes(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    save(root / "labelsTr" / "BRATS_001.nii.gz", np.zeros((32, 32, 7), np.uint8))
    with pytest.raises(
        InvalidInputError, match=r"shape \(32, 32, 7\) differs from the image's \(32, 32, 8\)"
    ):
        check_cases(read_volume_dataset(root))


def test_float_labels(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    _, label = make_case(0)
    bad = label.astype(np.float32)
    bad[3, 4, 5] = 0.5
    path = save(root / "labelsTr" / "BRATS_000.nii.gz", bad)
    ds = read_volume_dataset(root)
    with pytest.raises(SegtoolError, match=r"label value 0.5 at voxel \(3, 4, 5\) is not a whole"):
        read_label(path, ds.class_map)
    # whole numbers stored as float are labels like any other
    save(path, label.astype(np.float32))
    np.testing.assert_array_equal(read_label(path, ds.class_map), label)


def test_labels_outside_the_map(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    _, label = make_case(0)
    label[0, 0, 0] = 7
    save(root / "labelsTr" / "BRATS_000.nii.gz", label)
    with pytest.raises(InvalidInputError, match=r"label value 7 is not a class id 0..2"):
        check_cases(read_volume_dataset(root))


def test_missing_channel_file(tmp_path):
    root = make_nnunet(tmp_path, n=2)
    (root / "imagesTr" / "case01_0001.nii.gz").unlink()
    with pytest.raises(
        SegtoolError, match=r"case01_0001.nii.gz: missing channel 1 of case 'case01'"
    ):
        read_volume_dataset(root)


def test_nnunet_channel_files_disagree(tmp_path):
    root = make_nnunet(tmp_path, n=2)
    image, _ = make_case(0)
    save(root / "imagesTr" / "case00_0001.nii.gz", image[..., 1], affine(origin=(0, 0, 0)))
    with pytest.raises(
        InvalidInputError, match=r"case00_0001.nii.gz: affine differs from .*case00_0000"
    ):
        check_cases(read_volume_dataset(root))


def test_nnunet_ignore_label_becomes_ignore_index(tmp_path):
    root = make_nnunet(tmp_path, n=1)
    doc = json.loads((root / "dataset.json").read_text())
    doc["labels"]["ignore"] = 3
    (root / "dataset.json").write_text(json.dumps(doc))
    _, label = make_case(0)
    label[0, :, :] = 3
    path = save(root / "labelsTr" / "case00.nii.gz", label)
    ds = read_volume_dataset(root)
    read = read_label(path, ds.class_map, ds.label_ignore)
    assert (read[0] == ds.class_map.ignore_index).all()
    np.testing.assert_array_equal(read[1:], label[1:])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"labels": {"0": "bg"}}, 'neither "modality"'),
        ({"modality": {"1": "T1"}, "labels": {"0": "bg"}}, "keys \\[1\\] are not 0..0"),
        ({"modality": {"0": "T1"}, "labels": {"0": "bg", "2": "x"}}, "not 0..1"),
        (
            {"channel_names": {"0": "T1"}, "labels": {"background": 0, "whole": [1, 2]}},
            "region labels",
        ),
    ],
)
def test_bad_dataset_json(tmp_path, doc, message):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(SegtoolError, match=message):
        read_volume_dataset(tmp_path)


def test_unpaired_cases(tmp_path):
    root = make_msd(tmp_path, n=2, test=0)
    (root / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match="BRATS_001: no label"):
        read_volume_dataset(root)
