"""Ensembles (predict RUN1 RUN2 ..., evaluate --model RUN1 --model RUN2) and the public
in-memory predictor (`segtool.load_model`), each against what the command writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segtool import load_model
from segtool.core.errors import SegtoolError
from segtool.core.images import load_rgb
from segtool.core.masks import read_mask
from segtool.core.postprocess import LARGEST, MIN_SIZE, Rule
from segtool.evaluate.model import evaluate_model
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.train.data import normalize
from segtool.train.loop import fit
from segtool.train.runfolder import RunFolder
from tests.cli import invoke
from tests.synthetic import make_dataset

FAST = {"encoder": "resnet18", "workers": 0, "batch_size": 4, "augment": "none", "lr": 3e-3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on one dataset (the second at another input size), and a binary run."""
    root = tmp_path_factory.mktemp("ensemble")
    dataset = make_dataset(root / "ds", n=16, size=48)
    split = json.loads((dataset / "split.json").read_text())
    split.update(train=split["train"][:-3], test=split["train"][-3:])
    (dataset / "split.json").write_text(json.dumps(split))
    fit(dataset, root / "a", epochs=2, seed=1, **FAST)
    fit(dataset, root / "b", epochs=2, seed=2, size="64", **FAST)
    binary = make_dataset(root / "bin", n=8, size=32, classes=2)
    fit(binary, root / "c", epochs=1, **FAST)
    return dataset, root / "a", root / "b", root / "c"


def _probs(folder, stem):
    return np.load(folder / f"{stem}.npz")["probs"]


def test_an_ensemble_of_a_run_with_itself_is_the_run(runs, tmp_path):
    dataset, a, _, _ = runs
    one = invoke(["predict", a, dataset / "images", tmp_path / "one", "--device", "cpu",
                  "--probabilities", "--tta"])  # fmt: skip
    two = invoke(["predict", a, a, dataset / "images", tmp_path / "two", "--device", "cpu",
                  "--probabilities", "--tta"])  # fmt: skip
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    for path in sorted((tmp_path / "one").glob("*.png")):
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()
        stem = path.stem
        assert _probs(tmp_path / "one", stem).tobytes() == _probs(tmp_path / "two", stem).tobytes()


def test_an_ensemble_is_the_mean_of_its_runs_probabilities(runs, tmp_path):
    dataset, a, b, _ = runs
    predict_dir([a, b], dataset / "images", tmp_path / "ens", device="cpu", probabilities=True)
    engines = [Engine(load_predictor(r), torch.device("cpu")) for r in (a, b)]
    for stem in ("s00", "s07", "s15"):
        x = [normalize(load_rgb(dataset / "images" / f"{stem}.png"), "imagenet")]
        each = [e.probabilities(x)[0].numpy() for e in engines]  # b resizes to 64 and back
        mean = (each[0] + each[1]) / 2
        written = _probs(tmp_path / "ens", stem).astype(np.float32)
        np.testing.assert_allclose(written, mean, atol=1e-3)  # float16 on disk
        labels = read_mask(tmp_path / "ens" / f"{stem}.png")
        top2 = np.sort(mean, axis=0)[-2:]
        sure = top2[1] - top2[0] > 1e-3
        np.testing.assert_array_equal(labels[sure], mean.argmax(axis=0)[sure])


def test_evaluate_an_ensemble_scores_the_mean(runs, tmp_path):
    dataset, a, b, _ = runs
    result = invoke(["evaluate", "--model", a, "--model", b, dataset, "--device", "cpu",
                     "--out", tmp_path / "rep", "--no-hd95"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{a} + {b} on the test split" in result.stdout
    predict_dir([a, b], dataset / "images", tmp_path / "ens", device="cpu",
                stems={"s09", "s10", "s11"})  # fmt: skip
    for stem in ("s09", "s10", "s11"):
        assert (tmp_path / "rep" / "predictions" / f"{stem}.png").read_bytes() == (
            tmp_path / "ens" / f"{stem}.png"
        ).read_bytes()
    alone = evaluate_model(a, dataset, device="cpu", out=tmp_path / "alone", with_hd95=False)
    self_pair = evaluate_model([a, a], dataset, device="cpu", out=tmp_path / "self",
                               with_hd95=False)  # fmt: skip
    assert alone.summary["per_class"] == self_pair.summary["per_class"]


def test_runs_that_disagree_are_refused_in_one_line(runs, tmp_path):
    dataset, a, _, c = runs
    result = invoke(["predict", a, c, dataset / "images", tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 1 and not (tmp_path / "o").exists()
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"{a} and {c} cannot be ensembled" in line and "class maps differ" in line
    again = invoke(["evaluate", "--model", a, "--model", c, dataset, "--device", "cpu",
                    "--out", tmp_path / "r"])  # fmt: skip
    assert again.exit_code == 1 and "cannot be ensembled" in again.stderr


def test_an_ensemble_is_not_scored_on_another_runs_training_images(runs, tmp_path):
    dataset, a, b, _ = runs
    other = tmp_path / "other"
    other.mkdir()
    split = json.loads((b / "split.json").read_text())
    split["train"].append(split["test"].pop(0))  # it trained on a test image of the first
    (other / "split.json").write_text(json.dumps(split))
    for name in ("model", "classes.json", "config.json"):
        (other / name).symlink_to(b / name)
    with pytest.raises(SegtoolError, match="s09: in the train split of .*other"):
        evaluate_model([a, other], dataset, device="cpu", out=tmp_path / "r")


def test_thresholds_and_post_processing_only_when_every_run_shares_them(runs, tmp_path):
    dataset, a, b, _ = runs
    RunFolder(a).write_postprocess({"rules": {"square": Rule(LARGEST).to_json()}})
    try:
        report = predict_dir([a, b], dataset / "images", tmp_path / "e", device="cpu")
        assert any("post-processing differ, so the ensemble uses none" in n for n in report.notes)
        same = predict_dir([a, a], dataset / "images", tmp_path / "s", device="cpu")
        assert any("square: keep the largest component" in n for n in same.notes)
    finally:
        RunFolder(a).write_postprocess(None)


def test_load_model_equals_the_command_byte_for_byte(runs, tmp_path):
    """The in-memory predictor gives the mask predict writes (and its probabilities, as
    predict stores them in float16), with TTA and post-processing, for arrays and PIL."""
    dataset, a, b, _ = runs
    rule = Rule(MIN_SIZE, 4096)  # drops every square
    RunFolder(a).write_postprocess({"rules": {"square": rule.to_json()}})
    try:
        for out, batch in (("cmd", "8"), ("one", "1")):
            result = invoke(["predict", a, dataset / "images", tmp_path / out, "--device", "cpu",
                             "--tta", "--probabilities", "--batch-size", batch])  # fmt: skip
            assert result.exit_code == 0, result.output
        model = load_model(str(a), device="cpu", tta=True)
        assert any("square: drop components under 4096 pixels" in n for n in model.notes)
        raw = load_model(a, device="cpu", tta=True, postprocess=False)
        image = load_rgb(dataset / "images" / "s00.png")
        assert (raw.predict(image)[0] == 1).any() and not (model.predict(image)[0] == 1).any()
        for path in sorted((dataset / "images").glob("*.png")):
            with Image.open(path) as img:
                labels, probs = model.predict(img)
            again, _ = model.predict(np.asarray(Image.open(path).convert("RGB")))
            np.testing.assert_array_equal(labels, again)
            np.testing.assert_array_equal(labels, read_mask(tmp_path / "cmd" / f"{path.stem}.png"))
            assert probs.dtype == np.float32 and probs.shape == (3, 48, 48)
            # one image at a time, as the command at --batch-size 1: the same bytes; in
            # batches of 8 the CPU's convolutions round differently in the last bits
            stored = _probs(tmp_path / "one", path.stem)
            assert probs.astype(np.float16).tobytes() == stored.tobytes()
            batched = _probs(tmp_path / "cmd", path.stem).astype(np.float32)
            np.testing.assert_allclose(probs, batched, atol=2e-3)
        ens = load_model([a, b], device="cpu")
        predict_dir([a, b], dataset / "images", tmp_path / "ens", device="cpu")
        labels, _ = ens.predict(load_rgb(dataset / "images" / "s03.png"))
        np.testing.assert_array_equal(labels, read_mask(tmp_path / "ens" / "s03.png"))
    finally:
        RunFolder(a).write_postprocess(None)


def test_load_model_takes_grey_images_and_refuses_others(runs):
    _, a, _, _ = runs
    model = load_model(a, device="cpu")
    grey = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    labels, probs = model.predict(grey)
    expected, _ = model.predict(np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(labels, expected)
    assert labels.shape == (40, 30) and probs.shape == (3, 40, 30)
    assert list(model.class_map.names) == ["_background_", "square", "disc"]
    with pytest.raises(SegtoolError, match=r"shape \(4, 4, 7\)"):
        model.predict(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(SegtoolError, match="a list"):
        model.predict([[1, 2]])
