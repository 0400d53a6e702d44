"""Working on a subset and options that do not apply: ``predict --list FILE``,
``evaluate --only-predicted``, options for images refused on volumes (and the reverse), and
volume runs worded in cases and voxels."""

from __future__ import annotations

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask
from segtool.split.assign import split_dataset
from tests.cli import invoke
from tests.synthetic import make_dataset
from tests.volumes import make_msd

TINY = ["--epochs", "1", "--encoder", "resnet18", "--workers", "0", "--batch-size", "4"]
TINY += ["--augment", "none", "--device", "cpu"]


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    dataset = make_dataset(root / "ds", n=8, size=32)
    result = invoke(["train", dataset, "--out", root / "run", *TINY, "--size", "32"])
    assert result.exit_code == 0, result.output
    return dataset, root / "run"


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    root = make_msd(tmp_path_factory.mktemp("mri"), n=6, test=1)
    split_dataset(root, val=0.2, test=0.2, seed=3, jobs=1)
    run = root.parent / "run"
    result = invoke(["train", root, "--out", run, *TINY])
    assert result.exit_code == 0, result.output
    return root, run, result


# --- predict --list ---------------------------------------------------------------------------


def test_predict_list_predicts_exactly_the_listed_images(image_run, tmp_path):
    dataset, run = image_run
    stems = sorted(p.stem for p in (dataset / "images").iterdir())
    listed = tmp_path / "names.txt"
    # a file name, a bare stem, a comment and a blank line
    listed.write_text(f"# two of them\n{stems[0]}.png\n\n{stems[3]}\n")
    result = invoke(["predict", run, dataset / "images", tmp_path / "out", "--list", listed])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [stems[0], stems[3]]


@pytest.mark.parametrize("split", ["train", "val"])  # make_dataset has no test split
def test_predict_split_predicts_exactly_that_splits_images(image_run, tmp_path, split):
    import json

    dataset, run = image_run
    wanted = sorted(json.loads((dataset / "split.json").read_text())[split])
    assert wanted and len(wanted) < len(list((dataset / "images").iterdir()))
    result = invoke(["predict", run, dataset / "images", tmp_path / "out", "--split", split])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == wanted


def test_evaluate_model_on_an_empty_split_names_another(image_run, tmp_path):
    dataset, run = image_run  # make_dataset's split has no test images
    result = invoke(["evaluate", "--model", run, dataset, "--out", tmp_path / "ev"])
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "the test split has no images in this dataset; score another split (--split val)" in (
        _said(result)
    )
    assert not (tmp_path / "ev").exists()


def test_predict_list_refuses_a_name_that_matches_nothing(image_run, tmp_path):
    dataset, run = image_run
    listed = tmp_path / "names.txt"
    stem = next((dataset / "images").iterdir()).stem
    listed.write_text(f"{stem}\nno_such_image\n")
    result = invoke(["predict", run, dataset / "images", tmp_path / "out", "--list", listed])
    assert result.exit_code == 1
    assert "1 of 2 listed name(s) not found" in _said(result) and "no_such_image" in result.output
    assert not (tmp_path / "out").exists()


def test_predict_split_and_list_together_are_refused(image_run, tmp_path):
    dataset, run = image_run
    (tmp_path / "names.txt").write_text("a\n")
    args = ["predict", run, dataset / "images", tmp_path / "out", "--split", "test"]
    result = invoke([*args, "--list", tmp_path / "names.txt"])
    assert result.exit_code != 0 and "--split and --list" in result.output


def test_predict_list_of_volume_cases(volume_run, tmp_path):
    root, run, _ = volume_run
    listed = tmp_path / "cases.txt"
    listed.write_text("BRATS_001.nii.gz\nBRATS_500\n")  # a labelled case and an imagesTs/ one
    result = invoke(["predict", run, root, tmp_path / "out", "--list", listed])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["BRATS_001.nii.gz", "BRATS_500.nii.gz"]
    assert "2 label volumes (cases)" in _said(result)


# --- options that do not apply ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option", [["--overlay"], ["--tile", "64"], ["--skip-invalid"], ["--max-pixels", "1000000"]]
)
def test_predict_refuses_image_options_for_volumes(volume_run, tmp_path, option):
    root, run, _ = volume_run
    result = invoke(["predict", run, root / "imagesTs", tmp_path / "out", *option])
    assert result.exit_code == 2  # a usage error, before anything is read or written
    assert f"{option[0]} applies to 2-D images, not to volumes" in _said(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "volumes"),
    [(["--size", "64"], True), (["--normalize", "image"], True), (["--axis", "coronal"], False)],
)
def test_train_refuses_options_for_the_other_kind(volume_run, image_run, tmp_path, option, volumes):
    dataset = volume_run[0] if volumes else image_run[0]
    result = invoke(["train", dataset, "--out", tmp_path / "run", *option, *TINY])
    assert result.exit_code == 2
    wanted = "not to volumes" if volumes else "applies to volume folders, not to images"
    assert f"{option[0]} " in result.output and wanted in _said(result)
    assert not (tmp_path / "run").exists()


# --- volume wording ---------------------------------------------------------------------------


def test_volume_runs_say_cases_and_voxels(volume_run, tmp_path):
    root, run, trained = volume_run
    assert " val cases, multiclass mode" in _said(trained)
    result = invoke(["evaluate", "--model", run, root, "--out", tmp_path / "ev", "--no-hd95"])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert "voxels pooled over all cases" in said and "voxel accuracy" in said
    assert "pixel" not in said.replace("per_image", "") and " images" not in said


# --- evaluate --only-predicted ----------------------------------------------------------------


def _folders(root, predicted: list[str]) -> None:
    cmap = make_class_map(["_background_", "cat"])
    (root / "ds").mkdir()
    cmap.save(root / "ds" / "classes.json")
    for folder, stems in (("ds/masks", ["a", "b", "c", "d"]), ("pred", predicted)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            write_mask(root / folder / f"{stem}.png", np.array([[0, 1], [1, 1]], np.uint8), cmap)


def test_only_predicted_scores_the_predicted_subset_and_says_so(tmp_path):
    _folders(tmp_path, ["a", "c"])
    args = ["evaluate", tmp_path / "pred", tmp_path / "ds/masks", "--no-hd95"]
    refused = invoke(args)  # without the option a missing prediction stays an error
    assert refused.exit_code == 1 and "no prediction for 2 reference(s): b, d" in refused.output
    result = invoke([*args, "--only-predicted", "--overwrite"])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert "--only-predicted: 2 image(s) with a prediction scored, 2 reference(s)" in said
    assert "left out: b, d" in said
    import json

    summary = json.loads((tmp_path / "pred/summary.json").read_text())
    assert summary["n_images"] == 2 and summary["references_left_out"] == ["b", "d"]
    assert summary["per_class"]["cat"]["dice"] == 1.0  # b and d are not scored as misses
    both = invoke([*args, "--only-predicted", "--allow-missing", "--overwrite"])
    assert both.exit_code == 1 and "pass one of them" in both.output
