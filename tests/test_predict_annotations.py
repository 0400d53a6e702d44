"""``predict --as``: the predicted masks as pre-annotations that ``segtool rasterize`` reads
back into the same masks, for every format, through the command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from segtool.core.masks import read_mask
from segtool.sources.writers.formats import ANNOTATION_FORMATS
from segtool.train.loop import fit
from tests.cli import invoke
from tests.synthetic import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate")
    dataset = make_dataset(root / "ds", n=10, size=48)
    fit(dataset, root / "run", epochs=4, encoder="resnet18", workers=0, batch_size=4,
        augment="none", lr=3e-3)  # fmt: skip
    return dataset, root / "run"


def _predict(run_dir, images, out, *extra):
    return invoke(["predict", str(run_dir), str(images), str(out), "--device", "cpu", *extra])


@pytest.mark.parametrize("fmt", sorted(ANNOTATION_FORMATS))
def test_rasterize_of_the_annotations_gives_back_the_predicted_masks(run, tmp_path, fmt):
    dataset, run_dir = run
    out = tmp_path / "pre"
    result = _predict(run_dir, dataset / "images", out, "--as", fmt)
    assert result.exit_code == 0, result.output
    file = ANNOTATION_FORMATS[fmt].file
    source = out if file is None else out / file
    extra = [] if file is None else ["--image-dir", str(dataset / "images")]
    labels = ["--labels", str(run_dir / "classes.json")]
    result = invoke(["rasterize", str(source), str(tmp_path / "back"), *labels, *extra])
    assert result.exit_code == 0, result.output
    classes_seen = set()
    for predicted in sorted(out.glob("*.png")):
        mask = read_mask(predicted)
        classes_seen |= set(np.unique(mask).tolist())
        np.testing.assert_array_equal(read_mask(tmp_path / "back" / "masks" / predicted.name), mask)
    assert classes_seen == {0, 1, 2}  # the model predicts both classes: the test has shapes


def test_labelme_files_reference_their_image_and_score_each_shape(run, tmp_path):
    dataset, run_dir = run
    out = tmp_path / "pre"
    assert _predict(run_dir, dataset / "images", out, "--as", "labelme").exit_code == 0
    doc = json.loads((out / "s03.json").read_text())
    assert not doc["imagePath"].startswith("/") and "\\" not in doc["imagePath"]
    assert (out / doc["imagePath"]).resolve() == (dataset / "images" / "s03.png").resolve()
    assert doc["imageData"] is None and (doc["imageWidth"], doc["imageHeight"]) == (48, 48)
    scored = [s for s in doc["shapes"] if s["label"] != "_background_"]
    assert scored and all(s["description"].startswith("score 0.") for s in scored)
    embedded = tmp_path / "embedded"
    result = _predict(run_dir, dataset / "images", embedded, "--as", "labelme", "--embed-images")
    assert result.exit_code == 0, result.output
    assert json.loads((embedded / "s03.json").read_text())["imageData"]


def test_label_studio_predictions_carry_model_version_and_scores(run, tmp_path):
    dataset, run_dir = run
    out = tmp_path / "pre"
    assert _predict(run_dir, dataset / "images", out, "--as", "labelstudio").exit_code == 0
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"s{i:02d}.png" for i in range(10)]
    (prediction,) = tasks[0]["predictions"]
    assert prediction["model_version"].endswith(": run") and 0 < prediction["score"] <= 1
    assert all(0 < r["score"] <= 1 for r in prediction["result"] if "score" in r)


def test_simplified_polygons_stay_close(run, tmp_path):
    dataset, run_dir = run
    out = tmp_path / "pre"
    result = _predict(run_dir, dataset / "images", out, "--as", "cvat", "--simplify", "1")
    assert result.exit_code == 0, result.output
    labels = ["--labels", str(run_dir / "classes.json"), "--image-dir", str(dataset / "images")]
    back = tmp_path / "back"
    assert invoke(["rasterize", str(out / "annotations.xml"), str(back), *labels]).exit_code == 0
    for c in (1, 2):
        a = np.stack([read_mask(p) == c for p in sorted(out.glob("*.png"))])
        b = np.stack([read_mask(back / "masks" / p.name) == c for p in sorted(out.glob("*.png"))])
        assert (a & b).sum() / (a | b).sum() > 0.95


def test_refusals_are_one_line_and_write_nothing(run, tmp_path):
    dataset, run_dir = run
    # A multi-label run (the same model read as 3 overlapping classes) into a polygon format.
    multi = tmp_path / "multi"
    shutil.copytree(run_dir, multi)
    names = ["_background_", "square", "disc", "ring"]
    classes = {"classes": [{"id": i, "name": n} for i, n in enumerate(names)], "multilabel": True}
    (multi / "classes.json").write_text(json.dumps(classes))
    cases = [
        (multi, ["--as", "labelme"], "--as labelme: the run is multi-label"),
        (run_dir, ["--as", "shapefile"], "--as 'shapefile' is not one of labelme, coco"),
        (run_dir, ["--as", "coco", "--embed-images"], "--embed-images: only labelme"),
        (run_dir, ["--as", "via", "--simplify", "-1"], "--simplify -1.0 must be"),
        (run_dir, ["--simplify", "2"], "--simplify shapes the annotations of --as"),
    ]
    for model, extra, message in cases:
        out = tmp_path / "out"
        result = _predict(model, dataset / "images", out, *extra)
        assert result.exit_code == 1 and message in result.stderr, (extra, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    result = _predict(multi, dataset / "images", tmp_path / "coco", "--as", "coco")
    assert result.exit_code == 0, result.output
