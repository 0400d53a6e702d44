"""segtool evaluate: pairing, the summary layout, aggregation rules, bad inputs, the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.evaluate.report import evaluate_dirs
from tests.cli import invoke

CMAP = make_class_map(["_background_", "cat", "dog"])


def put(folder, stem, rows):
    folder.mkdir(parents=True, exist_ok=True)
    write_mask(folder / f"{stem}.png", np.array(rows, dtype=np.uint8), CMAP)


@pytest.fixture
def dataset(tmp_path):
    """Two images: 'a' has cat and dog, 'b' only cat; predictions beside them."""
    gt, pred = tmp_path / "ds" / "masks", tmp_path / "pred"
    (tmp_path / "ds").mkdir()
    CMAP.save(tmp_path / "ds" / "classes.json")
    put(gt, "a", [[1, 1, 0, 2], [0, 0, 0, 2]])
    put(pred, "a", [[1, 0, 0, 2], [0, 0, 2, 2]])
    put(gt, "b", [[1, 1, 255, 0], [0, 0, 0, 0]])
    put(pred, "b", [[1, 1, 1, 0], [0, 0, 0, 0]])
    return tmp_path


def test_summary_by_hand(dataset):
    result = evaluate_dirs(dataset / "pred", dataset / "ds/masks", jobs=1)
    s = result.summary
    assert s["n_images"] == 2 and s["classes"] == {"1": "cat", "2": "dog"}
    cat, dog = s["per_class"]["cat"], s["per_class"]["dog"]
    # cat pooled: a: tp 1, fn 1; b: tp 2 (the ignore pixel is not counted)
    assert (cat["tp"], cat["fp"], cat["fn"]) == (3, 0, 1)
    assert cat["dice"] == pytest.approx(6 / 7) and cat["iou"] == pytest.approx(3 / 4)
    assert cat["precision"] == 1.0 and cat["recall"] == pytest.approx(3 / 4)
    # dog: only in a: tp 2, fp 1
    assert dog["dice"] == pytest.approx(4 / 5) and dog["images_with_reference"] == 1
    # per image: cat a = 2/3, b = 1; dog a = 4/5, b = NaN (absent from both) and skipped
    assert cat["image_mean_dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert dog["image_mean_dice"] == pytest.approx(4 / 5) and dog["images_nan_dice"] == 1
    assert s["per_image"][1]["dice"]["dog"] is None
    assert s["mean"]["dice"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert s["pixel_accuracy"] == pytest.approx(13 / 15)
    # dog in a: prediction boundary distances 0, 1, 0 -> 95th percentile 0.9; reverse 0, 0
    assert math.isclose(s["per_image"][0]["hd95"]["dog"], 0.9)
    assert json.loads(result.summary_path.read_text()) == s
    rows = list(csv.DictReader(result.per_image_path.open()))
    assert rows[1]["image"] == "b" and rows[1]["dice_dog"] == "" and rows[1]["dice_cat"] == "1"


def test_absent_class_is_left_out_of_the_mean_and_named(tmp_path):
    put(tmp_path / "gt", "x", [[1, 0]])
    put(tmp_path / "pred", "x", [[1, 0]])
    s = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=_classes(tmp_path), jobs=1
    ).summary
    assert s["per_class"]["dog"]["dice"] is None and s["mean_excludes"] == ["dog"]
    assert s["mean"]["dice"] == 1.0


def _classes(tmp_path):
    CMAP.save(tmp_path / "classes.json")
    return tmp_path / "classes.json"


def test_one_side_empty_hd95_is_the_diagonal(tmp_path):
    put(tmp_path / "gt", "x", [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    put(tmp_path / "pred", "x", [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=_classes(tmp_path), jobs=1
    ).summary
    assert s["per_class"]["cat"]["hd95"] == 5.0 and s["per_class"]["cat"]["dice"] == 0.0


def test_abstaining_over_a_missed_object_does_not_improve_hd95(tmp_path):
    """A predicted ignore value predicts no class (as for Dice): writing it over an object the
    prediction got wrong scores as predicting background or another class there."""
    reference = [[1, 1, 0, 0, 0, 0, 0, 0, 1, 1]] * 4  # two cat objects, 6 pixels apart
    for stem, right_side in (("abstain", 255), ("background", 0), ("wrong_class", 2)):
        put(tmp_path / "gt", stem, reference)
        put(tmp_path / "pred", stem, [[1, 1, 0, 0, 0, 0, 0, 0, right_side, right_side]] * 4)
    s = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=_classes(tmp_path), jobs=1
    ).summary
    hd = {row["image"]: row["hd95"]["cat"] for row in s["per_image"]}
    # By hand: the missed object's 8 boundary pixels lie 7 (column 8) and 8 (column 9) from
    # the found one; with the 8 zero distances the 95th percentile of 16 values is 8.
    assert hd == {"abstain": 8.0, "background": 8.0, "wrong_class": 8.0}
    dice = {row["image"]: row["dice"]["cat"] for row in s["per_image"]}
    assert dice["abstain"] == dice["background"] == pytest.approx(2 / 3)  # 2*8 / (16 + 8)
    assert s["prediction_ignored"] == 8


def test_without_classes_ids_are_names(tmp_path):
    put(tmp_path / "gt", "x", [[0, 3, 3]])
    put(tmp_path / "pred", "x", [[0, 3, 0]])
    result = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", jobs=1, with_hd95=False)
    assert "no classes.json" in result.warnings[0]
    assert list(result.summary["per_class"]) == ["1", "2", "3"]
    assert result.summary["per_class"]["3"]["dice"] == pytest.approx(2 / 3)
    assert "hd95" not in result.summary["mean"]


def test_parallel_equals_serial(dataset):
    one = evaluate_dirs(dataset / "pred", dataset / "ds/masks", jobs=1, out=dataset / "o1").summary
    two = evaluate_dirs(dataset / "pred", dataset / "ds/masks", jobs=2, out=dataset / "o2").summary
    assert one == two


def test_missing_and_extra_predictions(dataset):
    (dataset / "pred" / "b.png").unlink()
    put(dataset / "pred", "stray", [[0]])
    with pytest.raises(
        SegtoolError, match=r"no prediction for 1 reference\(s\): b; .*--allow-missing"
    ):
        evaluate_dirs(dataset / "pred", dataset / "ds/masks", jobs=1)
    result = evaluate_dirs(dataset / "pred", dataset / "ds/masks", jobs=1, allow_missing=True)
    assert result.summary["missing_predictions"] == ["b"]
    assert result.summary["per_class"]["cat"]["fn"] == 3
    assert any("stray" in w for w in result.warnings)


def _fails(pred, gt, message, **kwargs):
    out = pred.parent / "report"
    with pytest.raises(SegtoolError, match=message):
        evaluate_dirs(pred, gt, jobs=1, out=out, **kwargs)
    assert not out.exists()


def test_size_mismatch(dataset):
    put(dataset / "pred", "b", [[1, 1, 1], [0, 0, 0]])
    _fails(
        dataset / "pred",
        dataset / "ds/masks",
        r"b.png: prediction is 3x2 but its reference .*b.png is 4x2",
    )


def test_value_outside_class_map(dataset):
    put(dataset / "pred", "b", [[1, 1, 7, 0], [0, 0, 0, 0]])
    _fails(dataset / "pred", dataset / "ds/masks", r"b.png: value 7 is neither a class id \(0..2\)")


def test_rgb_mask(dataset):
    Image.new("RGB", (4, 2), (128, 0, 0)).save(dataset / "pred" / "b.png")
    _fails(dataset / "pred", dataset / "ds/masks", r"b.png: a RGB colour picture, not a label mask")


def test_unreadable_png(dataset):
    (dataset / "pred" / "b.png").write_bytes(b"\x89PNG broken")
    _fails(dataset / "pred", dataset / "ds/masks", r"b.png: not a readable PNG mask")


def test_empty_folder_and_no_common_stems(dataset):
    (dataset / "empty").mkdir()
    _fails(dataset / "empty", dataset / "ds/masks", r"no prediction masks \(\*.png\) found")
    put(dataset / "other", "zzz", [[0]])
    _fails(dataset / "other", dataset / "ds/masks", "share no file names")


def test_classes_file_that_does_not_parse(dataset):
    (dataset / "bad.json").write_text("{")
    _fails(
        dataset / "pred",
        dataset / "ds/masks",
        "not a readable classes.json",
        classes=dataset / "bad.json",
    )


def test_binary_0_255_masks_are_refused(tmp_path):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(
            tmp_path / folder / "x.png"
        )
    _fails(tmp_path / "pred", tmp_path / "gt", "look like 0/255 binary masks")
    _fails(tmp_path / "pred", tmp_path / "gt", "segtool import-masks IMAGES")


def test_cli(dataset):
    result = invoke(["evaluate", str(dataset / "pred"), str(dataset / "ds/masks"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "cat" in result.stdout and "0.8571" in result.stdout and "mean" in result.stdout
    assert (dataset / "pred" / "summary.json").exists()
    bad = invoke(["evaluate", str(dataset / "nope"), str(dataset / "ds/masks")])
    assert bad.exit_code == 1 and "no such prediction folder" in bad.stderr
