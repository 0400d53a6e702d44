"""evaluate's headline means: the mean precision counts a class never predicted as 0, as
torchmetrics' macro precision (zero_division=0) does; the old figure stays as
precision_predicted."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask
from segtool.evaluate.report import evaluate_dirs
from tests.cli import invoke

NAMES = ["_background_", "road", "car", "sign", "tree"]
CMAP = make_class_map(NAMES)


def _write(root, reference: np.ndarray, prediction: np.ndarray) -> None:
    (root / "ds").mkdir(parents=True, exist_ok=True)
    CMAP.save(root / "ds" / "classes.json")
    for folder, masks in (("ds/masks", reference), ("pred", prediction)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, mask in enumerate(masks):
            write_mask(root / folder / f"img{i}.png", mask.astype(np.uint8), CMAP)


def test_never_predicted_class_counts_zero_by_hand(tmp_path):
    # road: predicted right; car: in the reference, never predicted; sign: predicted, not in the
    # reference; tree: in neither.
    reference = np.array([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    prediction = np.array([[[1, 1, 0, 0], [0, 0, 3, 0]]])
    _write(tmp_path, reference, prediction)
    s = evaluate_dirs(tmp_path / "pred", tmp_path / "ds/masks", jobs=1, with_hd95=False).summary
    assert s["per_class"]["car"]["precision"] is None  # undefined for the class itself
    # foreground: road 1, car 0 (never predicted), sign 0; tree absent from both, left out
    assert s["mean"]["precision"] == pytest.approx(1 / 3)
    assert s["mean_left_out"]["precision"] == ["tree"]
    # the old figure: only the classes predicted at least once (road 1, sign 0)
    assert s["mean"]["precision_predicted"] == pytest.approx(1 / 2)
    assert s["mean_left_out"]["precision_predicted"] == ["car", "tree"]
    # the interval of the mean brackets the mean, car counting 0 in every draw
    low, high = s["mean_ci95"]["precision"]
    assert low <= 1 / 3 <= high and high < 1 / 2


def test_mean_all_precision_matches_torchmetrics_macro(tmp_path):
    torch = pytest.importorskip("torch")
    from torchmetrics.classification import MulticlassPrecision

    rng = np.random.default_rng(3)
    reference = rng.integers(0, 4, size=(3, 12, 12))  # tree (4) never in the reference
    prediction = np.where(rng.random(reference.shape) < 0.7, reference, 0)
    prediction[prediction == 2] = 0  # car never predicted
    prediction[0, 0, :3] = 4  # tree predicted where the reference has none
    reference[1, 5, :] = 255  # ignored by the reference
    _write(tmp_path, reference, prediction)
    s = evaluate_dirs(tmp_path / "pred", tmp_path / "ds/masks", jobs=1, with_hd95=False).summary
    metric = MulticlassPrecision(
        num_classes=len(NAMES), average="macro", zero_division=0, ignore_index=255
    )
    expected = float(
        metric(torch.as_tensor(prediction).flatten(), torch.as_tensor(reference).flatten())
    )
    assert s["mean_all"]["precision"] == pytest.approx(expected)
    assert s["mean_all"]["precision_predicted"] > s["mean_all"]["precision"]


def test_cli_says_which_classes_count_zero(tmp_path):
    reference = np.array([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    prediction = np.array([[[1, 1, 0, 0], [0, 0, 0, 0]]])
    _write(tmp_path, reference, prediction)
    result = invoke(["evaluate", tmp_path / "pred", tmp_path / "ds/masks", "--no-hd95"])
    assert result.exit_code == 0, result.output
    assert "precision counts 0 (never predicted): car" in " ".join(result.output.split())


# --- the confusion matrix -----------------------------------------------------------------


def _read_confusion(path) -> tuple[list[str], list[str], np.ndarray]:
    rows = list(csv.reader(path.open()))
    return rows[0][1:], [r[0] for r in rows[1:]], np.array([r[1:] for r in rows[1:]], dtype=int)


def _bincount_confusion(reference: np.ndarray, prediction: np.ndarray, k: int) -> np.ndarray:
    """Independent: a bincount of (reference, prediction) codes, reference ignore dropped,
    a predicted 255 in column K."""
    ref, pred = reference.ravel().astype(int), prediction.ravel().astype(int)
    keep = ref != 255
    pred = np.where(pred == 255, k, pred)
    return np.bincount(ref[keep] * (k + 1) + pred[keep], minlength=k * (k + 1)).reshape(k, k + 1)


@pytest.mark.parametrize("jobs", [1, 2])
def test_confusion_csv_matches_bincount(tmp_path, jobs):
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 5, size=(6, 20, 20))
    prediction = np.where(
        rng.random(reference.shape) < 0.6, reference, rng.integers(0, 5, size=reference.shape)
    )
    reference[0, :2] = 255  # ignored by the reference: in no row
    prediction[1, :3] = 255  # the prediction abstains: the ignore column
    _write(tmp_path, reference, prediction)
    result = evaluate_dirs(tmp_path / "pred", tmp_path / "ds/masks", jobs=jobs, with_hd95=False)
    assert result.confusion_path == tmp_path / "pred" / "confusion.csv"
    columns, rows, matrix = _read_confusion(result.confusion_path)
    assert columns == [*NAMES, "ignore (255)"] and rows == NAMES
    np.testing.assert_array_equal(matrix, _bincount_confusion(reference, prediction, 5))
    # the per-class counts and the matrix agree
    car = result.summary["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (
        matrix[2, 2],
        matrix[:, 2].sum() - matrix[2, 2],
        matrix[2].sum() - matrix[2, 2],
    )
    png = tmp_path / "pred" / "confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_of_volumes_matches_bincount(tmp_path):
    pytest.importorskip("nibabel")
    from tests.volumes import affine, save

    rng = np.random.default_rng(2)
    reference = rng.integers(0, 3, size=(2, 6, 7, 5)).astype(np.uint8)
    prediction = np.where(rng.random(reference.shape) < 0.7, reference, 0).astype(np.uint8)
    for i in range(2):
        save(tmp_path / "gt" / f"case{i}.nii.gz", reference[i], affine())
        save(tmp_path / "pred" / f"case{i}.nii.gz", prediction[i], affine())
    make_class_map(["background", "edema", "tumour"]).save(tmp_path / "classes.json")
    result = evaluate_dirs(
        tmp_path / "pred", tmp_path / "gt", classes=tmp_path / "classes.json", jobs=1
    )
    _, rows, matrix = _read_confusion(result.confusion_path)
    assert rows == ["background", "edema", "tumour"]
    np.testing.assert_array_equal(matrix, _bincount_confusion(reference, prediction, 3))


def test_cli_names_the_confusion_files(tmp_path):
    reference = np.array([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    prediction = np.array([[[1, 2, 2, 0], [0, 0, 0, 0]]])
    _write(tmp_path, reference, prediction)
    result = invoke(["evaluate", tmp_path / "pred", tmp_path / "ds/masks", "--no-hd95"])
    assert result.exit_code == 0, result.output
    assert "confusion.csv" in result.output and "confusion.png" in result.output
    _, _, matrix = _read_confusion(tmp_path / "pred" / "confusion.csv")
    assert matrix[1, 2] == 1 and matrix[2, 0] == 1  # a road pixel called car, a car pixel missed
