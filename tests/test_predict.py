"""Predicting: masks at the original size, tiles agree with whole images, held-out evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.images import load_rgb
from segtool.core.masks import read_mask, write_mask
from segtool.evaluate.model import evaluate_model
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.train.data import normalize, to_model_input
from segtool.train.loop import fit
from tests.cli import invoke
from tests.synthetic import make_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    dataset = make_dataset(root / "ds", n=20, size=64)
    split = json.loads((dataset / "split.json").read_text())
    split.update(train=split["train"][:-4], test=split["train"][-4:])  # 12 / 4 / 4
    (dataset / "split.json").write_text(json.dumps(split))
    fit(
        dataset,
        root / "run",
        epochs=6,
        encoder="resnet18",
        workers=0,
        batch_size=4,
        augment="none",
        lr=3e-3,
    )
    return dataset, root / "run"


def test_masks_match_a_direct_forward_pass(run, tmp_path):
    dataset, run_dir = run
    report = predict_dir(run_dir, dataset / "images", tmp_path / "out", device="cpu")
    assert report.n_images == 20 and not report.failed
    predictor = load_predictor(run_dir)
    image = load_rgb(dataset / "images" / "s03.png")
    x = to_model_input(normalize(image, "imagenet")[None], torch.device("cpu"))
    with torch.no_grad():
        expected = predictor.model(x).argmax(1)[0].numpy()
    written = read_mask(tmp_path / "out" / "s03.png")
    np.testing.assert_array_equal(written, expected)
    with Image.open(tmp_path / "out" / "s03.png") as img:
        assert img.mode == "P" and img.size == (64, 64)


def test_odd_sizes_are_padded_and_cropped_back(run, tmp_path):
    _, run_dir = run
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)).save(
        tmp_path / "imgs" / "odd.jpg"
    )
    predict_dir(run_dir, tmp_path / "imgs", tmp_path / "out", device="cpu")
    assert read_mask(tmp_path / "out" / "odd.png").shape == (37, 53)


def test_tiled_and_whole_predictions_agree(run):
    dataset, run_dir = run
    predictor = load_predictor(run_dir)
    big = np.concatenate([load_rgb(dataset / "images" / f"s0{i}.png") for i in range(2)], axis=1)
    inputs = [normalize(big, "imagenet")]  # 64 x 128
    whole = Engine(predictor, torch.device("cpu"))
    tiled = Engine(predictor, torch.device("cpu"), tile=64, overlap=0.5)
    pa, pb = whole.probabilities(inputs)[0], tiled.probabilities(inputs)[0]
    a, b = whole.labels(pa), tiled.labels(pb)
    confident = (pa.max(dim=0).values > 0.8).numpy()
    assert confident.mean() > 0.2
    assert (a == b)[confident].mean() > 0.98  # where the model is sure, tiles change little
    assert (a == b).mean() > 0.9
    square = [normalize(load_rgb(dataset / "images" / "s05.png"), "imagenet")]  # 64 x 64
    single = Engine(predictor, torch.device("cpu"), tile=64)  # one tile is the whole image
    np.testing.assert_array_equal(
        whole.labels(whole.probabilities(square)[0]), single.labels(single.probabilities(square)[0])
    )


def test_tta_probabilities_overlays_and_tile_rounding(run, tmp_path):
    dataset, run_dir = run
    report = predict_dir(
        run_dir,
        dataset / "images",
        tmp_path / "out",
        device="cpu",
        tta=True,
        tile=50,
        probabilities=True,
        overlay_images=True,
    )
    assert any("rounded up to 64" in note for note in report.notes)
    probs = np.load(tmp_path / "out" / "s00.npz")["probs"]
    assert probs.dtype == np.float16 and probs.shape == (3, 64, 64)
    np.testing.assert_allclose(probs.astype(np.float32).sum(axis=0), 1, atol=1e-2)
    assert np.array_equal(probs.argmax(axis=0), read_mask(tmp_path / "out" / "s00.png"))
    with Image.open(tmp_path / "out" / "overlays" / "s00.jpg") as img:
        # the overlay, and under it the legend of the classes painted (if any)
        assert img.width == 64 and img.height >= 64


def test_an_unreadable_image_fails_before_anything_is_written(run, tmp_path):
    dataset, run_dir = run
    images = tmp_path / "imgs"
    images.mkdir()
    for stem in ("s00", "s01"):
        (images / f"{stem}.png").write_bytes((dataset / "images" / f"{stem}.png").read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SegtoolError, match=r"1 of 3 images cannot be read, nothing was written"):
        predict_dir(run_dir, images, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    report = predict_dir(run_dir, images, tmp_path / "out2", device="cpu", skip_invalid=True)
    assert report.n_images == 2 and "broken.jpg" in report.failed[0]


def test_bad_inputs(run, tmp_path):
    dataset, run_dir = run
    with pytest.raises(SegtoolError, match="no model here"):
        predict_dir(tmp_path, dataset / "images", tmp_path / "o")
    other = make_class_map(["_background_", "a", "b", "c"])
    other.save(tmp_path / "four.json")
    with pytest.raises(SegtoolError, match="4 classes need a model with 4 output channel.*has 3"):
        predict_dir(
            run_dir / "model", dataset / "images", tmp_path / "o", classes=tmp_path / "four.json"
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegtoolError, match="no images found"):
        predict_dir(run_dir, tmp_path / "empty", tmp_path / "o")
    (tmp_path / "o").mkdir()
    with pytest.raises(SegtoolError, match="already exists; pass --overwrite"):
        predict_dir(run_dir, dataset / "images", tmp_path / "o")


def test_evaluate_model_on_the_test_split_with_a_gallery(run, tmp_path):
    dataset, run_dir = run
    result = evaluate_model(run_dir, dataset, out=tmp_path / "ev", device="cpu", gallery=2, jobs=1)
    assert result.summary["n_images"] == 4
    test = set(json.loads((run_dir / "split.json").read_text())["test"])
    assert {row["image"] for row in result.summary["per_image"]} == test
    assert len(result.gallery) == 2 and (tmp_path / "ev" / "gallery" / "index.html").is_file()
    assert result.summary["mean"]["dice"] > 0.5
    everything = evaluate_model(
        run_dir, dataset, split="all", out=tmp_path / "all", device="cpu", jobs=1
    )
    train = set(json.loads((run_dir / "split.json").read_text())["train"])
    assert not train & {row["image"] for row in everything.summary["per_image"]}
    with pytest.raises(SegtoolError, match="--split 'nope'"):
        evaluate_model(run_dir, dataset, split="nope")


def test_cli_predict_and_evaluate(run, tmp_path, monkeypatch):
    from segtool.cli import common

    monkeypatch.setattr(common, "PHASE_LINE_AFTER", 0.0)  # every phase counts as long
    dataset, run_dir = run
    result = invoke(
        [
            "predict",
            str(run_dir),
            str(dataset / "images"),
            str(tmp_path / "p"),
            "--split",
            "test",
            "--overlay",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 masks written" in result.stdout and len(list((tmp_path / "p").glob("*.png"))) == 4
    result = invoke(
        [
            "evaluate",
            "--model",
            str(run_dir),
            str(dataset),
            "--out",
            str(tmp_path / "e"),
            "--device",
            "cpu",
            "--gallery",
            "2",
            "-j",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "on the test split" in result.stdout and "index.html" in result.stderr
    assert f"predicting 4 images of {dataset}\n" in result.stderr  # a line as predicting begins
    result = invoke(["evaluate", str(tmp_path / "p")])
    assert result.exit_code == 2
    # A 3-class model gives each pixel its most probable class: a --threshold would be ignored.
    args = ["predict", run_dir, dataset / "images", tmp_path / "t", "--device", "cpu"]
    result = invoke([*args, "--threshold", "0.3"])
    assert result.exit_code == 1 and "--threshold 0.3:" in result.stderr, result.output
    assert "drop --threshold" in result.stderr and not (tmp_path / "t").exists()


def test_binary_threshold_direction(tmp_path):
    """Binary models: a pixel is foreground when its foreground probability is ABOVE
    --threshold; a higher threshold gives fewer foreground pixels."""
    from segtool.train.model import build_model, save_model

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", None, 2, decoder_channels=(16, 8, 8, 8, 8))
    save_model(model, tmp_path / "model")
    make_class_map(["_background_", "fg"]).save(tmp_path / "classes.json")
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "a.png")
    probe = predict_dir(
        tmp_path / "model",
        images,
        tmp_path / "probe",
        classes=tmp_path / "classes.json",
        probabilities=True,
        device="cpu",
    )
    assert probe.n_images == 1
    spread = np.load(tmp_path / "probe" / "a.npz")["probs"][1].astype(np.float32)
    counts = []
    for t in np.quantile(spread, [0.25, 0.5, 0.75]):
        out = tmp_path / f"out{t:.6f}"
        predict_dir(
            tmp_path / "model",
            images,
            out,
            classes=tmp_path / "classes.json",
            threshold=float(t),
            probabilities=True,
            device="cpu",
        )
        mask = np.asarray(Image.open(out / "a.png"))
        foreground = np.load(out / "a.npz")["probs"][1].astype(np.float32)
        clear = np.abs(foreground - t) > 1e-3  # float16 storage blurs the cut itself
        np.testing.assert_array_equal((mask == 1)[clear], (foreground > t)[clear])
        counts.append(int((mask == 1).sum()))
    assert counts[0] > counts[1] > counts[2], counts


def test_python_api_is_lazy():
    code = (
        "import sys, segtool\n"
        "assert 'torch' not in sys.modules\n"
        "from segtool import rasterize_dir, split_dataset, evaluate_dirs\n"
        "assert 'torch' not in sys.modules\n"
        "from segtool import fit, predict_dir\n"
        "assert callable(fit) and callable(predict_dir)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _other(tmp_path, name="other", n=5):
    """A separate test folder: same stems as the training data, different pictures."""
    other = make_dataset(tmp_path / name, n=n, size=64, seed=7)
    (other / "split.json").unlink()
    return other


def test_separate_test_set_is_scored_whole(run, tmp_path):
    _, run_dir = run
    other = _other(tmp_path)
    result = invoke(["evaluate", "--model", str(run_dir), str(other), "--device", "cpu", "-j", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "evaluation" / "other" / "summary.json").read_text())
    assert summary["n_images"] == 5


def test_separate_test_set_holding_a_training_image_is_refused(run, tmp_path):
    dataset, run_dir = run
    other = _other(tmp_path)
    stem = json.loads((run_dir / "split.json").read_text())["train"][3]
    (other / "images" / "renamed.png").write_bytes(
        (dataset / "images" / f"{stem}.png").read_bytes()
    )
    (other / "masks" / "renamed.png").write_bytes((dataset / "masks" / f"{stem}.png").read_bytes())
    with pytest.raises(SegtoolError, match=r"1 of its 6 images are training images .*renamed.png"):
        evaluate_model(run_dir, other, out=tmp_path / "ev", device="cpu", jobs=1)
    assert not (tmp_path / "ev").exists()


def test_separate_test_set_with_its_own_class_order(run, tmp_path):
    _, run_dir = run
    other = _other(tmp_path)
    plain = evaluate_model(run_dir, other, out=tmp_path / "a", device="cpu", jobs=1)
    swapped = _other(tmp_path, "swapped")
    for path in (swapped / "masks").iterdir():
        mask = read_mask(path)
        write_mask(
            path,
            np.choose(mask, [0, 2, 1]).astype(np.uint8),
            make_class_map(["_background_", "disc", "square"]),
        )
    make_class_map(["_background_", "disc", "square"]).save(swapped / "classes.json")
    result = evaluate_model(run_dir, swapped, out=tmp_path / "b", device="cpu", jobs=1)
    assert result.summary["per_class"] == plain.summary["per_class"]
    assert (tmp_path / "b" / "references").is_dir()


def test_separate_test_set_never_replaces_a_users_references_folder(run, tmp_path):
    """OUT/references is an output like OUT/predictions: kept unless --overwrite is given."""
    _, run_dir = run
    swapped = _other(tmp_path, "swapped")
    make_class_map(["_background_", "disc", "square"]).save(swapped / "classes.json")
    mine = tmp_path / "ev" / "references" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own file")
    with pytest.raises(SegtoolError, match=r"references: already exists; pass --overwrite"):
        evaluate_model(run_dir, swapped, out=tmp_path / "ev", device="cpu", jobs=1)
    assert mine.read_text() == "my own file"
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["references"]


def test_predict_help_shows_the_engine_tile_overlap():
    # --help must not import torch, so the default is written out in the help text.
    from segtool.predict.engine import TILE_OVERLAP

    assert f"[default: {TILE_OVERLAP}]" in invoke(["predict", "--help"]).stdout


def test_evaluate_model_takes_the_object_options_as_folders_do(run, tmp_path):
    dataset, run_dir = run
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(run_dir), str(dataset), "--device", "cpu", "--no-hd95"]
    more = ["--lesion-min-size", "7", "--lesion-dilation", "1", "--iou-threshold", "0.3"]
    more += ["--connectivity", "face", "--nsd-tolerance", "2", "--seed", "5", "--out", str(out)]
    result = invoke([*args, *more])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == {
        "connectivity": "face",
        "lesion_dilation": 1,
        "lesion_min_size": 7,
        "iou_threshold": 0.3,
        "nsd_tolerance": 2.0,
        "unit": "px",
    }
    assert summary["bootstrap"]["seed"] == 5
    plain = evaluate_model(run_dir, dataset, out=tmp_path / "plain", device="cpu", jobs=1)
    assert plain.summary["objects"]["lesion_min_size"] == 0  # images: every object counts
