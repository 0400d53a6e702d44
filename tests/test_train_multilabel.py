"""Multi-label training: K-1 sigmoid channels, validation Dice rises; --regions; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.core.multilabel import decode, read_multilabel_values, write_multilabel_mask
from segtool.evaluate.model import evaluate_model
from segtool.evaluate.report import evaluate_dirs
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import Predictor, load_predictor
from segtool.train.curves import read_metrics
from segtool.train.loop import fit
from segtool.train.model import load_model
from segtool.train.thresholds import GRID
from tests.synthetic import make_dataset, make_multilabel_dataset

FAST = {"encoder": "resnet18", "workers": 0, "batch_size": 4, "augment": "none", "lr": 3e-3}


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    return make_multilabel_dataset(tmp_path_factory.mktemp("multi"))


@pytest.fixture(scope="module")
def multilabel_run(overlapping, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    return run, fit(overlapping, run, epochs=6, size=32, tune_thresholds=True, **FAST)


def test_validation_dice_rises(multilabel_run):
    run, result = multilabel_run
    rows = read_metrics(run / "metrics.csv")
    dice = [float(r["val_dice"]) for r in rows]
    assert dice[-1] > dice[0] + 0.2 and result.best_dice > 0.6, dice
    assert set(result.best_per_class) == {"square", "disc"}
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "multilabel"
    assert json.loads((run / "classes.json").read_text())["multilabel"] is True
    model = load_model(run / "model")
    assert model.segmentation_head[0].out_channels == 2  # K-1 channels, no background


def test_regions_train_overlapping_targets_from_a_label_map(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=8)
    result = fit(dataset, tmp_path / "run", epochs=1, size=32, regions="thing=1,2;disc=2", **FAST)
    assert set(result.best_per_class) == {"thing", "disc"}
    classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]] == ["_background_", "thing", "disc"]
    assert classes["multilabel"] is True
    options = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert options["regions"] == "thing=1,2;disc=2"


def test_regions_naming_unknown_ids(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=8)
    with pytest.raises(SegtoolError, match="region 'x' names id 7, which is not a foreground"):
        fit(dataset, tmp_path / "run", epochs=1, regions="x=1,7", **FAST)


def test_mixed_dataset_is_refused_before_training(overlapping, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(overlapping, mixed)
    cmap = make_class_map(["_background_", "square", "disc"])
    write_mask(mixed / "masks" / "m00.png", np.zeros((48, 48), np.uint8), cmap)
    with pytest.raises(SegtoolError, match="m00.png: an exclusive label mask .* multi-label"):
        fit(mixed, tmp_path / "run", epochs=1, **FAST)


def test_thresholds_are_tuned_on_validation_and_used_by_predict(multilabel_run, overlapping):
    run, result = multilabel_run
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc == result.thresholds and doc["tuned_on"] == "val"
    for name, cut in doc["thresholds"].items():
        assert cut in GRID.tolist()
        assert doc["val_dice"][name] >= doc["val_dice_at_0.5"][name]
    predictor = load_predictor(run)
    assert predictor.thresholds == doc["thresholds"]
    report = predict_dir(
        predictor, overlapping / "images", run / "pred", stems={"m15"}, overlay_images=True
    )
    assert any("tuned on the validation split" in note for note in report.notes)
    values = read_multilabel_values(run / "pred" / "m15.png", 3)  # a multi-label mask
    assert values.dtype == np.uint8 and (run / "pred" / "overlays" / "m15.jpg").is_file()
    # An explicit --threshold wins over the tuned ones, and is not announced.
    report = predict_dir(
        predictor, overlapping / "images", run / "p2", stems={"m15"}, threshold=0.5
    )
    assert not report.notes


def test_evaluate_model_scores_each_class(multilabel_run, overlapping):
    run, _ = multilabel_run
    result = evaluate_model(run, overlapping, split="test", gallery=1, jobs=1)
    summary = result.summary
    assert summary["multilabel"] is True and summary["n_images"] == 3
    assert set(summary["per_class"]) == {"square", "disc"}
    assert summary["mean"]["dice"] > 0.5
    assert result.gallery and result.gallery[0].is_file()


class Oracle(torch.nn.Module):
    """Reads the classes back from images that show them: red is class 1, blue class 2."""

    def forward(self, x):
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        rgb = x * std + mean  # back to 0..1
        return (rgb[:, [0, 2]] - 0.5) * 40  # logits: sure of every pixel


def test_predict_evaluate_round_trip_of_the_references_scores_one(tmp_path, overlapping):
    # Images that show the reference classes go through predict (loading, padding, sigmoid,
    # per-class thresholds, multi-label PNGs) and evaluate: the result must equal evaluating
    # the references against themselves, Dice 1 for every class.
    (tmp_path / "images").mkdir()
    for ref in sorted((overlapping / "masks").glob("*.png"))[:5]:
        planes, _ = decode(read_multilabel_values(ref, 3), 2)
        rgb = np.zeros((*planes.shape[1:], 3), np.uint8)
        rgb[..., 0], rgb[..., 2] = planes[0] * 255, planes[1] * 255
        Image.fromarray(rgb[:45, :37]).save(tmp_path / "images" / ref.name)  # not stride-sized
        crop = np.asarray(Image.open(ref))[:45, :37]
        (tmp_path / "refs").mkdir(exist_ok=True)
        write_multilabel_mask(tmp_path / "refs" / ref.name, crop)
    cmap = make_class_map(["_background_", "square", "disc"], multilabel=True)
    cmap.save(tmp_path / "classes.json")
    predictor = Predictor(Oracle(), cmap)
    predict_dir(predictor, tmp_path / "images", tmp_path / "pred", device="cpu")
    got = evaluate_dirs(tmp_path / "pred", tmp_path / "refs", jobs=1).summary
    own = evaluate_dirs(tmp_path / "refs", tmp_path / "refs", out=tmp_path / "own", jobs=1).summary
    assert got == own
    assert [row["dice"] for row in got["per_class"].values()] == [1.0, 1.0]
