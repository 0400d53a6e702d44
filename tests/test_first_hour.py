"""A careless first hour, on tiny data: the paths a new user gives by mistake (a file for a
folder, a dataset's masks/ for the dataset, a dataset for its masks, a run for predictions,
the two folders of evaluate swapped) get one line naming what to pass, and write nothing;
evaluate run twice on the same predictions does not take its own confusion.png for one."""

from __future__ import annotations

import numpy as np
import pytest

from segtool.core.errors import SegtoolError
from segtool.predict.folder import find_images
from tests.cli import invoke
from tests.synthetic import make_dataset
from tests.test_evaluate_means import _write


def _one_error(result, *parts: str) -> None:
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and result.exception is None, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    for part in parts:
        assert part in said, said


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("first") / "ds", n=8, size=32)


@pytest.mark.parametrize("command", ["split", "train"])
def test_a_file_or_a_subfolder_given_for_the_dataset_names_the_dataset(dataset, tmp_path, command):
    more = ["--out", tmp_path / "run", "--epochs", "1"] if command == "train" else []
    before = sorted(p.name for p in dataset.iterdir())
    for given, says in (
        (dataset / "split.json", "split.json: a file; pass the dataset folder"),
        (dataset / "masks", f"masks: the masks/ folder of a dataset; pass {dataset}"),
        (dataset / "images", f"images: the images/ folder of a dataset; pass {dataset}"),
        (dataset / "nope", "nope: no such dataset folder"),
    ):
        _one_error(invoke([command, given, *more]), says)
    assert sorted(p.name for p in dataset.iterdir()) == before
    assert not (tmp_path / "run").exists()


def test_predict_given_an_image_for_the_folder_says_to_pass_the_folder(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SegtoolError, match="a.png: a file; pass the folder that holds the images"):
        find_images(image)


def _dataset_and_predictions(root) -> None:
    reference = np.array([[[1, 1, 2, 2], [0, 0, 0, 0]]])
    prediction = np.array([[[1, 2, 2, 0], [0, 0, 0, 0]]])
    _write(root, reference, prediction)
    (root / "ds" / "images").mkdir()


def test_evaluate_says_what_a_dataset_or_a_run_given_for_masks_is(tmp_path):
    _dataset_and_predictions(tmp_path)
    ds = tmp_path / "ds"
    _one_error(
        invoke(["evaluate", tmp_path / "pred", ds]),
        f"it is a dataset: pass its masks, {ds / 'masks'}, or score a model on it with "
        f"segtool evaluate --model RUN {ds}",
    )
    (tmp_path / "run" / "model").mkdir(parents=True)
    _one_error(
        invoke(["evaluate", tmp_path / "run", ds / "masks"]),
        f"it is a run folder: score it with segtool evaluate --model {tmp_path / 'run'} DATASET",
    )
    assert not (tmp_path / "pred" / "summary.json").exists()


def test_evaluate_with_the_folders_swapped_writes_nothing_into_the_dataset(tmp_path):
    _dataset_and_predictions(tmp_path)
    masks = tmp_path / "ds" / "masks"
    before = sorted(p.name for p in masks.iterdir())
    _one_error(
        invoke(["evaluate", masks, tmp_path / "pred", "--no-hd95"]),
        "a dataset's reference masks given as the predictions",
        "the order is PREDICTIONS REFERENCES (or pass --out)",
    )
    assert sorted(p.name for p in masks.iterdir()) == before
    elsewhere = invoke(["evaluate", masks, tmp_path / "pred", "--no-hd95", "--out", tmp_path / "x"])
    assert elsewhere.exit_code == 0, elsewhere.output  # two annotators compared, say


def test_evaluate_twice_does_not_take_its_own_confusion_png_for_a_prediction(tmp_path):
    _dataset_and_predictions(tmp_path)
    args = ["evaluate", tmp_path / "pred", tmp_path / "ds" / "masks", "--no-hd95"]
    first = invoke(args)
    assert first.exit_code == 0 and (tmp_path / "pred" / "confusion.png").is_file()
    again = invoke([*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert "without a reference" not in again.output and "warning:" not in again.output
    # a mask named confusion.png, with no evaluate report beside it, is still a prediction
    (tmp_path / "pred" / "confusion.csv").unlink()
    third = invoke([*args, "--overwrite"])
    assert "1 prediction(s) without a reference ignored: confusion" in third.output
