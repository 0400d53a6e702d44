"""Scores under the right names: class maps that disagree, names that collide, ignored
prediction pixels counted on every path (images, multi-label masks, volumes, regions)."""

from __future__ import annotations

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.core.multilabel import encode, ignore_value, write_multilabel_mask
from segtool.evaluate.report import evaluate_dirs
from tests.volumes import SPACING, affine, make_msd, save

CATS = make_class_map(["_background_", "cat", "dog"])
DOGS = make_class_map(["_background_", "dog", "cat"])  # the same classes, another order


def _dataset(tmp_path):
    """GT masks in CATS' ids (classes.json beside them); predictions of the same pixels in
    DOGS' ids, as a model trained with DOGS' map writes them."""
    gt, pred = tmp_path / "ds" / "masks", tmp_path / "pred"
    gt.mkdir(parents=True)
    pred.mkdir()
    CATS.save(tmp_path / "ds" / "classes.json")
    DOGS.save(tmp_path / "dogs.json")
    reference = np.array([[1, 1, 0, 2], [0, 255, 0, 2]], np.uint8)
    write_mask(gt / "a.png", reference, CATS)
    swap = np.array([0, 2, 1] + [0] * 252 + [255], np.uint8)  # cat <-> dog, ignore stays
    write_mask(pred / "a.png", swap[reference], DOGS)
    return gt, pred


def test_class_maps_in_another_order_are_matched_by_name(tmp_path):
    gt, pred = _dataset(tmp_path)
    s = evaluate_dirs(pred, gt, classes=tmp_path / "dogs.json", jobs=1).summary
    # Matched by name the prediction is perfect; by position it would be all wrong (Dice 0).
    assert {n: c["dice"] for n, c in s["per_class"].items()} == {"dog": 1.0, "cat": 1.0}
    assert s["per_class"]["cat"]["tp"] == 2 and s["per_class"]["dog"]["tp"] == 2
    assert s["classes"] == {"1": "dog", "2": "cat"}


def test_class_maps_naming_other_classes_are_refused_naming_both(tmp_path):
    gt, pred = _dataset(tmp_path)
    make_class_map(["_background_", "dog", "bird"]).save(tmp_path / "birds.json")
    with pytest.raises(SegtoolError, match=r"ds/classes.json names .*birds.json.*'cat'"):
        evaluate_dirs(pred, gt, classes=tmp_path / "birds.json", jobs=1)


def _volume_folder(root, ref):
    """A one-case volume folder (edema 1, core 2) whose label is `ref`."""
    make_msd(root, n=1, test=0)
    save(root / "labelsTr" / "BRATS_000.nii.gz", ref, affine())
    return root / "labelsTr"


def test_volume_labels_in_another_order_than_classes_are_matched_by_name(tmp_path):
    ref = np.zeros((6, 5, 4), np.uint8)
    ref[1:3, 1:3, 1] = 1
    ref[4, 3, 2:4] = 2
    labels = _volume_folder(tmp_path / "mri", ref)
    run_map = make_class_map(["background", "core", "edema"])
    run_map.save(tmp_path / "run_classes.json")
    pred = np.choose(ref, [0, 2, 1]).astype(np.uint8)
    save(tmp_path / "pred" / "BRATS_000.nii.gz", pred, affine())
    s = evaluate_dirs(tmp_path / "pred", labels, classes=tmp_path / "run_classes.json").summary
    assert s["volumes"] is True and s["classes"] == {"1": "core", "2": "edema"}
    assert {n: c["dice"] for n, c in s["per_class"].items()} == {"core": 1.0, "edema": 1.0}
    make_class_map(["background", "core", "necrosis"]).save(tmp_path / "other.json")
    with pytest.raises(SegtoolError, match=r"dataset.json names .*other.json.*'edema'"):
        evaluate_dirs(tmp_path / "pred", labels, classes=tmp_path / "other.json")


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        ("c1.nii", "c1.nii.gz", "same stem as"),
        ("Case.nii.gz", "case.nii.gz", "differ only in case"),
    ],
)
def test_volume_names_that_collide_are_refused(tmp_path, first, second, why):
    volume = np.zeros((4, 4, 3), np.uint8)
    volume[1, 1, 1] = 1
    make_class_map(["background", "edema"]).save(tmp_path / "classes.json")
    save(tmp_path / "gt" / "c1.nii.gz", volume)
    save(tmp_path / "gt" / "case.nii.gz", volume)
    save(tmp_path / "pred" / first, volume)
    save(tmp_path / "pred" / second, volume)
    with pytest.raises(SegtoolError, match=why):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", classes=tmp_path / "classes.json")


def test_multilabel_predictions_count_their_ignored_pixels(tmp_path):
    cmap = make_class_map(["_background_", "a", "b"], multilabel=True)
    cmap.save(tmp_path / "classes.json")
    planes = np.zeros((2, 3, 4), bool)
    planes[0, 0, :] = True
    planes[1, :, 0] = True
    ignored = np.zeros((3, 4), bool)
    ignored[2, 3] = True  # the reference ignores one pixel: never counted
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_multilabel_mask(tmp_path / "gt" / "x.png", encode(planes, ignored))
    abstain = np.zeros((3, 4), bool)
    abstain[0, :2] = True  # the prediction abstains over two pixels of class a
    abstain[2, 3] = True  # ... and over the reference's ignore pixel (not counted)
    write_multilabel_mask(tmp_path / "pred" / "x.png", encode(planes, abstain))
    s = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", classes=tmp_path / "classes.json").summary
    assert s["prediction_ignored"] == 2
    assert s["per_class"]["a"]["fn"] == 2 and s["per_class"]["a"]["fp"] == 0


def test_region_bit_predictions_on_volumes_count_their_ignored_voxels(tmp_path):
    ref = np.zeros((6, 5, 4), np.uint8)
    ref[1:4, 1:3, 1] = 1
    ref[2, 1, 1] = 2
    labels = _volume_folder(tmp_path / "mri", ref)
    whole = ref > 0
    bits = encode(np.stack([whole, ref == 2]), None).astype(np.uint8)
    bits[1, 1, 1] = ignore_value(2)  # the model abstains on one voxel of the whole tumour
    save(tmp_path / "pred" / "BRATS_000.nii.gz", bits, affine())
    s = evaluate_dirs(
        tmp_path / "pred",
        labels,
        regions="whole=1,2;core=2",
        bit_predictions=True,
        jobs=1,
    ).summary
    assert s["prediction_ignored"] == 1
    assert s["per_class"]["whole"]["fn"] == 1 and s["per_class"]["whole"]["tp"] == 5
    # HD95 too: the missed corner voxel is 0.9 mm (one voxel along the first axis) from the
    # predicted surface; the reference's 6 boundary voxels' distances 0 x 5, 0.9 -> 95th: 0.675
    assert SPACING[0] == 0.9
    assert s["per_image"][0]["hd95"]["whole"] == pytest.approx(np.percentile([0] * 5 + [0.9], 95))
