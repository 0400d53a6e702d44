"""segtool export: ONNX and TorchScript folders, what they carry, the parity check, predict on
onnxruntime, and the refusals (one line, exit 1, nothing written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from segtool.core.masks import read_mask
from segtool.export.folder import export_model
from segtool.predict import exported as exported_module
from segtool.predict.folder import predict_dir
from tests.cli import invoke
from tests.synthetic import make_dataset

TINY = {
    "epochs": 1,
    "encoder": "tu-resnet10t",
    "decoder_channels": "16,8,8,8,8",
    "workers": 0,
    "batch_size": 4,
    "augment": "none",
    "lr": 3e-3,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny three-class run on 48 x 48 images (padded to 64 to predict) and its dataset."""
    from segtool.train.loop import fit

    root = tmp_path_factory.mktemp("export")
    dataset = make_dataset(root / "ds", n=12, size=48)
    fit(dataset, root / "run", **TINY)
    return dataset, root / "run"


@pytest.fixture(scope="module")
def onnx_export(run, tmp_path_factory):
    _, run_dir = run
    out = tmp_path_factory.mktemp("onnx") / "exported"
    report = export_model(run_dir, out)
    return out, report


def _odd_images(folder, sizes=((37, 53), (64, 40), (48, 48))):
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"o{i}.png")
    return folder


def test_the_onnx_folder_carries_what_a_consumer_needs(run, onnx_export):
    import onnx

    _, run_dir = run
    out, report = onnx_export
    assert sorted(os.listdir(out)) == ["model.onnx", "segtool.json"]
    doc = json.loads((out / "segtool.json").read_text())
    assert doc["classes"] == json.loads((run_dir / "classes.json").read_text())
    assert doc["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert doc["normalization"]["std"] == [0.229, 0.224, 0.225]
    assert doc["input"]["channel_order"] == "RGB" and doc["geometry"]["size"] is None
    assert doc["output"]["mode"] == "multiclass" and doc["output"]["activation"] == "softmax"
    assert doc["opset"] == 18 and doc["parity"]["images"] == 4  # the run's val split
    assert report.dynamic == ["batch", "height", "width"]
    model = onnx.load(out / "model.onnx")
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == doc["classes"]
    assert props["format"] == "onnx" and json.loads(props["normalization"]) == doc["normalization"]
    assert report.parity.passed and report.parity.max_logit_diff < 1e-3


def test_a_consumer_following_segtool_json_gets_predicts_masks(run, onnx_export, tmp_path):
    """onnxruntime fed by hand as segtool.json says (no segtool code) gives the torch masks."""
    import onnxruntime as ort

    dataset, run_dir = run
    out, _ = onnx_export
    doc = json.loads((out / "segtool.json").read_text())
    predict_dir(run_dir, dataset / "images", tmp_path / "torch", device="cpu")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    mean, std = np.array(doc["normalization"]["mean"]), np.array(doc["normalization"]["std"])
    for stem in ("s00", "s09"):
        pixels = np.asarray(Image.open(dataset / "images" / f"{stem}.png").convert("RGB"))
        padded = np.zeros((64, 64, 3), np.float32)  # pixel value 0, then normalised
        padded[:48, :48] = pixels
        x = ((padded / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        logits = session.run(None, {doc["input"]["name"]: x})[0]
        labels = logits[0, :, :48, :48].argmax(0)
        np.testing.assert_array_equal(labels, read_mask(tmp_path / "torch" / f"{stem}.png"))


@pytest.mark.parametrize("tta", [False, True])
def test_both_backends_give_the_same_masks(run, onnx_export, tmp_path, tta):
    _, run_dir = run
    out, _ = onnx_export
    images = _odd_images(tmp_path / "imgs")
    a = invoke(["predict", run_dir, images, tmp_path / "a", "--device", "cpu", *(["--tta"] * tta)])
    b = invoke(
        ["predict", out, images, tmp_path / "b", "--backend", "onnxruntime", "--device", "cpu"]
        + ["--tta"] * tta
    )
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    for name in sorted(os.listdir(tmp_path / "a")):
        np.testing.assert_array_equal(
            read_mask(tmp_path / "a" / name), read_mask(tmp_path / "b" / name)
        )
    assert len(os.listdir(tmp_path / "b")) == 3


def test_torchscript_export_runs_on_the_torch_backend(run, tmp_path):
    dataset, run_dir = run
    result = invoke(["export", run_dir, tmp_path / "ts", "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "parity on 4 images" in result.stdout
    assert sorted(os.listdir(tmp_path / "ts")) == ["model.pt", "segtool.json"]
    predict_dir(run_dir, dataset / "images", tmp_path / "a", device="cpu")
    predict_dir(tmp_path / "ts", dataset / "images", tmp_path / "b", device="cpu")
    for name in os.listdir(tmp_path / "a"):
        np.testing.assert_array_equal(
            read_mask(tmp_path / "a" / name), read_mask(tmp_path / "b" / name)
        )
    onnx_only = invoke(
        ["predict", tmp_path / "ts", dataset / "images", tmp_path / "c", "--backend", "onnxruntime"]
    )
    assert onnx_only.exit_code == 1 and "--backend torch" in onnx_only.stderr
    assert not (tmp_path / "c").exists()


def test_check_images_and_overwrite(run, tmp_path):
    _, run_dir = run
    images = _odd_images(tmp_path / "imgs")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "old.txt").write_text("old")
    args = ["export", run_dir, out, "--check-images", images, "--check-count", "2"]
    refused = invoke(args)
    assert refused.exit_code == 1 and len(refused.stderr.splitlines()) == 1
    assert "already exists" in refused.stderr and os.listdir(out) == ["old.txt"]
    replaced = invoke([*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert "parity on 2 images" in replaced.stdout and str(images) in replaced.stdout
    assert sorted(os.listdir(out)) == ["model.onnx", "segtool.json"]


def _refused(result, *words):
    assert result.exit_code == 1, result.output
    assert result.exception is None and len(result.stderr.splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_a_run_without_a_model_is_refused(run, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    _refused(invoke(["export", tmp_path / "run", tmp_path / "out"]), "no trained model")
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_out_inside_the_run_is_refused(run):
    _, run_dir = run
    before = sorted(os.listdir(run_dir))
    _refused(invoke(["export", run_dir, run_dir / "exported"]), "lies inside the run")
    assert sorted(os.listdir(run_dir)) == before


def test_parity_checks_each_image_at_its_own_padded_size(run, tmp_path):
    """Images of mixed sizes are checked as predict batches them, by padded size: no image is
    padded to a neighbour's size, so the check's numbers are those of each image alone."""
    import dataclasses
    from collections import Counter

    from segtool.export.parity import Parity, check_parity
    from segtool.predict.predictor import load_predictor

    _, run_dir = run
    predictor = load_predictor(run_dir)
    predictor.model.eval()
    shapes: Counter = Counter()

    def recorded(x):
        shapes[tuple(x.shape[2:])] += x.shape[0]
        return predictor.model(x)

    reference = dataclasses.replace(predictor, model=recorded)
    exported = dataclasses.replace(predictor, model=lambda x: predictor.model(x) * 1.5)
    # Padded to 32 x 32, 96 x 64, 32 x 32, 96 x 64, 32 x 64: in batches of 4 by their order,
    # the first four would all be padded to 96 x 64.
    images = _odd_images(tmp_path / "imgs", ((30, 30), (70, 40), (30, 30), (70, 40), (20, 60)))
    paths = sorted(images.iterdir())
    alone = [check_parity(reference, exported, [p], Parity(1, "one")) for p in paths]
    shapes.clear()
    together = check_parity(reference, exported, paths, Parity(len(paths), "all"))
    assert shapes == {(32, 32): 2, (96, 64): 2, (32, 64): 1}
    assert together.max_logit_diff == max(p.max_logit_diff for p in alone)
    assert together.pixels == sum(p.pixels for p in alone) == 2 * 900 + 2 * 2800 + 1200
    assert together.differing == sum(p.differing for p in alone)


def test_a_parity_failure_leaves_nothing(run, tmp_path, monkeypatch):
    _, run_dir = run
    real = exported_module.OrtForward.__call__
    monkeypatch.setattr(
        exported_module.OrtForward, "__call__", lambda self, x: real(self, x) + 0.01
    )
    result = invoke(["export", run_dir, tmp_path / "out"])
    _refused(result, "disagrees with the run", "0.01", "nothing was written")
    assert os.listdir(tmp_path) == []  # neither OUT nor its temporary


def test_a_logit_tolerance_of_zero_refuses_any_difference(run, tmp_path, monkeypatch):
    _, run_dir = run
    real = exported_module.OrtForward.__call__
    monkeypatch.setattr(
        exported_module.OrtForward, "__call__", lambda self, x: real(self, x) + 1e-6
    )
    _refused(invoke(["export", run_dir, tmp_path / "out", "--tolerance", "0"]), "tolerance 0")
    assert os.listdir(tmp_path) == []


def test_labels_that_differ_are_refused_whatever_the_logit_tolerance(run, tmp_path, monkeypatch):
    _, run_dir = run
    real = exported_module.OrtForward.__call__
    monkeypatch.setattr(
        exported_module.OrtForward, "__call__", lambda self, x: real(self, x).flip(1)
    )
    result = invoke(["export", run_dir, tmp_path / "out", "--tolerance", "1000"])
    _refused(result, "labelled differently (tolerance 0.0100%)")
    assert os.listdir(tmp_path) == []


def test_onnxruntime_needs_an_export(run, onnx_export, tmp_path):
    dataset, run_dir = run
    out, _ = onnx_export
    args = [dataset / "images", tmp_path / "masks"]
    _refused(
        invoke(["predict", run_dir, *args, "--backend", "onnxruntime"]),
        "no exported model here",
        "segtool export",
    )
    _refused(invoke(["predict", out, *args]), "--backend onnxruntime")
    assert not (tmp_path / "masks").exists()


def test_fixed_height_and_width_where_the_architecture_needs_them(tmp_path, monkeypatch):
    """A run trained at --size exports with a fixed input when the exporter refuses a free
    height and width (PAN and SegFormer do), if every image is stretched to that size."""
    from segtool.export import formats
    from segtool.train.loop import fit

    dataset = make_dataset(tmp_path / "ds", n=12, size=48)
    fit(dataset, tmp_path / "run", **{**TINY, "size": "40,40", "resize": "stretch"})
    real = formats._export

    def no_free_height(model, sample, axes):
        if "height" in axes:
            raise RuntimeError("Constraints violated (height)")
        return real(model, sample, axes)

    monkeypatch.setattr(formats, "_export", no_free_height)
    report = export_model(tmp_path / "run", tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "segtool.json").read_text())
    assert report.dynamic == ["batch"] and doc["input"]["fixed_height_width"] == [64, 64]
    assert doc["geometry"] | {"rule": ""} == {
        "size": [40, 40], "resize": "stretch", "rule": "", "stride": 32
    }  # fmt: skip
    assert report.parity.passed, report.parity
    images = _odd_images(tmp_path / "imgs")
    predict_dir(tmp_path / "run", images, tmp_path / "a", device="cpu")
    predict_dir(tmp_path / "out", images, tmp_path / "b", device="cpu", backend="onnxruntime")
    for name in os.listdir(tmp_path / "a"):
        a, b = read_mask(tmp_path / "a" / name), read_mask(tmp_path / "b" / name)
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(formats, "_export", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(Exception, match="cannot export this model"):
        export_model(tmp_path / "run", tmp_path / "out2")


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_sigmoid_runs_carry_their_thresholds(kind, tmp_path):
    """A binary run (one sigmoid channel, cut 0.5) and a multi-label run with tuned per-class
    cuts: segtool.json carries the cuts, and onnxruntime's masks are the run's."""
    from segtool.train.loop import fit
    from segtool.train.runfolder import RunFolder
    from tests.synthetic import make_multilabel_dataset

    if kind == "binary":
        dataset, extra = make_dataset(tmp_path / "ds", n=12, size=48, classes=2), {}
    else:
        dataset, extra = make_multilabel_dataset(tmp_path / "ds"), {"tune_thresholds": True}
    fit(dataset, tmp_path / "run", **TINY, **extra)
    export_model(tmp_path / "run", tmp_path / "out")
    output = json.loads((tmp_path / "out" / "segtool.json").read_text())["output"]
    assert output["mode"] == kind and output["activation"] == "sigmoid"
    if kind == "binary":
        assert output["channels"] == 1 and output["thresholds"] == {"square": 0.5}
    else:
        run = RunFolder(tmp_path / "run")
        tuned = run.thresholds(run.class_map())
        assert tuned and output["thresholds"] == tuned and output["thresholds_tuned"]
        loaded = exported_module.load_exported(tmp_path / "out", "onnxruntime")
        assert loaded.thresholds == tuned  # what predict cuts at
    images = dataset / "images"
    predict_dir(tmp_path / "run", images, tmp_path / "a", device="cpu")
    predict_dir(tmp_path / "out", images, tmp_path / "b", device="cpu", backend="onnxruntime")
    for name in sorted(os.listdir(tmp_path / "a")):
        a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("a", "b"))
        np.testing.assert_array_equal(a, b)


def test_the_runs_post_processing_is_carried_and_applied(run, tmp_path):
    """A run with post-processing (keep each square's largest component): segtool.json holds
    the rule, and onnxruntime's masks are the run's, post-processed alike."""
    import shutil

    from segtool.core.postprocess import LARGEST, Rule

    _, run_dir = run
    shutil.copytree(run_dir, tmp_path / "run")
    rules = {"rules": {"square": {"rule": LARGEST}}}
    (tmp_path / "run" / "postprocess.json").write_text(json.dumps(rules))
    export_model(tmp_path / "run", tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "segtool.json").read_text())
    assert doc["postprocess"] == {"square": {"rule": "largest"}}
    assert exported_module.load_exported(tmp_path / "out", "onnxruntime").postprocess == {
        "square": Rule(LARGEST)
    }
    images = _odd_images(tmp_path / "imgs")
    predict_dir(tmp_path / "run", images, tmp_path / "a", device="cpu")
    predict_dir(tmp_path / "out", images, tmp_path / "b", device="cpu", backend="onnxruntime")
    for name in sorted(os.listdir(tmp_path / "a")):
        a, b = read_mask(tmp_path / "a" / name), read_mask(tmp_path / "b" / name)
        np.testing.assert_array_equal(a, b)
