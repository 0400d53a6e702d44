"""Post-processing chosen on the validation split: the rules on hand-drawn masks (2-D, 3-D,
bit sets), the choice against rules applied and scored independently, and the chosen rules
applied by predict and evaluate --model (and not with --no-postprocess)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask
from segtool.core.metrics import Counts, count, dice
from segtool.core.postprocess import (
    LARGEST,
    MIN_SIZE,
    ComponentCounts,
    Rule,
    apply_rules,
    choose_rules,
    class_plane,
)
from segtool.evaluate.model import evaluate_model
from segtool.evaluate.postprocess import choose_postprocessing
from segtool.predict.folder import predict_dir
from segtool.train.loop import fit
from segtool.train.runfolder import RunFolder
from tests.cli import invoke
from tests.synthetic import make_dataset

FAST = {"encoder": "resnet18", "workers": 0, "batch_size": 4, "augment": "none", "lr": 3e-3}


def test_rules_on_a_hand_drawn_mask():
    labels = np.zeros((8, 10), np.uint8)
    labels[0:3, 0:3] = 1  # 9 px
    labels[5, 5] = 1  # 1 px, touches the next one at a corner only (full connectivity joins)
    labels[6, 6] = 1
    labels[7, 0] = 1  # 1 px alone
    labels[0:2, 7:10] = 2  # 6 px
    largest = apply_rules(labels, {1: Rule(LARGEST)}, multilabel=False)
    expected = labels.copy()
    expected[5, 5] = expected[6, 6] = expected[7, 0] = 0
    np.testing.assert_array_equal(largest, expected)
    small = apply_rules(labels, {1: Rule(MIN_SIZE, 2)}, multilabel=False)
    expected = labels.copy()
    expected[7, 0] = 0  # the corner-joined pair (2 px) stays
    np.testing.assert_array_equal(small, expected)
    # class 2 untouched by either; the input is not changed
    assert labels[7, 0] == 1
    assert apply_rules(labels, {2: Rule(MIN_SIZE, 7)}, False)[0:2, 7:10].sum() == 0


def test_rules_on_bit_sets_clear_only_their_bit():
    bits = np.zeros((6, 6), np.uint8)
    bits[0:3, 0:3] |= 1  # class 1, 9 px
    bits[5, 5] |= 1  # class 1, 1 px
    bits[4:6, 4:6] |= 2  # class 2 overlaps that pixel
    out = apply_rules(bits, {1: Rule(LARGEST)}, multilabel=True)
    assert out[5, 5] == 2 and out[0, 0] == 1 and out[4, 4] == 2
    np.testing.assert_array_equal(class_plane(out, 2, True), class_plane(bits, 2, True))


def test_components_are_found_in_three_dimensions():
    volume = np.zeros((4, 5, 5), np.uint8)
    volume[0, 1:3, 1:3] = 1  # 4 voxels on slice 0
    volume[1, 3, 3] = 1  # joined through a corner to slice 0: one 3-D component of 5
    volume[3, 0:2, 0:2] = 1  # 4 voxels, apart
    out = apply_rules(volume, {1: Rule(MIN_SIZE, 5)}, multilabel=False)
    assert out[0:2].sum() == 5 and out[3].sum() == 0
    slices = [apply_rules(s, {1: Rule(MIN_SIZE, 5)}, False) for s in volume]
    assert sum(int(s.sum()) for s in slices) == 0  # slice by slice every piece is under 5


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    return ndimage.binary_opening(rng.random(shape) < p) | (rng.random(shape) < 0.01)


@pytest.mark.parametrize("shape", [(40, 40), (6, 20, 20)])
def test_the_choice_equals_rules_applied_and_scored_with_the_metrics_module(shape):
    """Each candidate's Dice, as the chooser computes it from component counts, equals the
    Dice of the masks `apply_rules` draws, counted by `metrics.count` (ignore pixels in the
    reference)."""
    rng = np.random.default_rng(len(shape))
    pairs = []
    for _ in range(4):
        reference = np.where(_blobs(rng, shape, 0.55), 1, 0).astype(np.uint8)
        reference[rng.random(shape) < 0.03] = 255
        prediction = np.where(_blobs(rng, shape, 0.5), 1, 0).astype(np.uint8)
        pairs.append((reference, prediction))
    items = [ComponentCounts.of(p == 1, r == 1, (p == 1) & (r != 255)) for r, p in pairs]
    doc = choose_rules({"thing": items})
    tried = doc["tried"]["thing"]
    assert LARGEST in tried and any(k.startswith(MIN_SIZE) for k in tried)
    for key, chooser_dice in tried.items():
        rule = Rule(LARGEST) if key == LARGEST else Rule(MIN_SIZE, int(key.split()[1]))
        total = Counts(*(np.zeros(2, np.int64) for _ in range(3)))
        for reference, prediction in pairs:
            total = total + count(reference, apply_rules(prediction, {1: rule}, False), 2, 255)
        assert chooser_dice == pytest.approx(float(dice(total)[1]), abs=1e-12), key
    base = Counts(*(np.zeros(2, np.int64) for _ in range(3)))
    for reference, prediction in pairs:
        base = base + count(reference, prediction, 2, 255)
    assert doc["val_dice_without"]["thing"] == pytest.approx(float(dice(base)[1]))
    best = max(v for v in tried.values() if v is not None)
    if best > doc["val_dice_without"]["thing"]:
        assert doc["val_dice_with"]["thing"] == best and "thing" in doc["rules"]
    else:
        assert doc["rules"] == {} and doc["val_dice_with"] == doc["val_dice_without"]


def test_a_rule_is_kept_only_when_it_raises_dice():
    reference = np.zeros((20, 20), bool)
    reference[2:10, 2:10] = True
    noisy = reference.copy()
    noisy[15, 15] = noisy[18, 3] = True  # two false specks: dropping them raises Dice
    clean = ComponentCounts.of(reference, reference, reference)
    specks = ComponentCounts.of(noisy, reference, noisy)
    doc = choose_rules({"a": [specks], "b": [clean]})
    assert doc["rules"]["a"] == {"rule": MIN_SIZE, "min_size": 4}  # the smallest that works
    assert doc["val_dice_without"]["a"] < doc["val_dice_with"]["a"] == 1.0
    assert "b" not in doc["rules"]  # already perfect: nothing raises it, nothing is kept
    assert doc["mean_val_dice_with"] == 1.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("postprocess")
    dataset = make_dataset(root / "ds", n=16, size=48)
    fit(dataset, root / "run", epochs=2, **FAST)
    return dataset, root / "run"


def test_choice_is_written_and_evaluate_val_reports_its_scores(run, tmp_path):
    dataset, run_dir = run
    choice = choose_postprocessing(run_dir, device="cpu")
    doc = json.loads((run_dir / "postprocess.json").read_text())
    assert doc == choice.document and doc["chosen_on"] == "val" and doc["items"] == 4
    assert set(doc["val_dice_without"]) == {"square", "disc"}
    for split_out, postprocess, key in (
        ("with", True, "val_dice_with"),
        ("without", False, "val_dice_without"),
    ):
        result = evaluate_model(
            run_dir, dataset, split="val", device="cpu", out=tmp_path / split_out,
            postprocess=postprocess, objects=False, with_hd95=False,
        )  # fmt: skip
        for name, row in result.summary["per_class"].items():
            assert row["dice"] == pytest.approx(doc[key][name], abs=1e-12), (key, name)


def test_predict_applies_the_runs_rules_unless_told_not_to(run, tmp_path):
    dataset, run_dir = run
    folder = RunFolder(run_dir)
    rules = {"square": Rule(MIN_SIZE, 4096), "disc": Rule(LARGEST)}  # drops every square
    doc = {"chosen_on": "val", "rules": {k: v.to_json() for k, v in rules.items()}}
    folder.write_postprocess(doc)
    try:
        raw = predict_dir(run_dir, dataset / "images", tmp_path / "raw", device="cpu",
                          postprocess=False)  # fmt: skip
        done = predict_dir(run_dir, dataset / "images", tmp_path / "pp", device="cpu")
        assert not any("post-processing" in n for n in raw.notes)
        assert any("square: drop components under 4096 pixels" in n for n in done.notes)
        for path in sorted((tmp_path / "raw").glob("*.png")):
            before, after = read_mask(path), read_mask(tmp_path / "pp" / path.name)
            expected = apply_rules(before, {1: Rule(MIN_SIZE, 4096), 2: Rule(LARGEST)}, False)
            np.testing.assert_array_equal(after, expected)
            assert not (after == 1).any()
        result = invoke(["predict", run_dir, dataset / "images", tmp_path / "cli",
                         "--device", "cpu", "--no-postprocess"])  # fmt: skip
        assert result.exit_code == 0, result.output
        for path in sorted((tmp_path / "raw").glob("*.png")):
            np.testing.assert_array_equal(read_mask(path), read_mask(tmp_path / "cli" / path.name))
        raw_val = [read_mask(tmp_path / "raw" / f"s{i}.png") for i in range(12, 16)]
        assert any((mask == 1).any() for mask in raw_val)  # the model predicts squares there
        for flag, squares in (("--postprocess", False), ("--no-postprocess", True)):
            scored = invoke(["evaluate", "--model", run_dir, dataset, "--split", "val",
                             "--device", "cpu", "--out", tmp_path / flag, flag])  # fmt: skip
            assert scored.exit_code == 0, scored.output
            predictions = tmp_path / flag / "predictions"
            assert any((read_mask(p) == 1).any() for p in predictions.glob("*.png")) == squares
        refused = invoke(["evaluate", tmp_path / "raw", dataset / "masks", "--no-postprocess"])
        assert refused.exit_code == 2 and "--no-postprocess goes with --model" in refused.stderr
    finally:
        folder.write_postprocess(None)


def test_a_damaged_postprocess_file_is_one_line(run, tmp_path):
    dataset, run_dir = run
    folder = RunFolder(run_dir)
    folder.write_postprocess({"rules": {"square": {"rule": "min_size", "min_size": 0}}})
    try:
        result = invoke(["predict", run_dir, dataset / "images", tmp_path / "o", "--device", "cpu"])
        assert result.exit_code == 1 and not (tmp_path / "o").exists()
        assert "postprocess.json" in result.stderr and "min_size" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        folder.write_postprocess({"rules": {"lion": {"rule": "largest"}}})
        with pytest.raises(SegtoolError, match="do not match classes"):
            folder.postprocess(folder.class_map())
    finally:
        folder.write_postprocess(None)


def test_train_chooses_and_prints_it_and_a_new_best_model_drops_it(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=12, size=32, classes=2)
    run_dir = tmp_path / "run"
    args = ["train", dataset, "--out", run_dir, "--epochs", "1", "--encoder", "resnet18",
            "--workers", "0", "--batch-size", "4", "--augment", "none", "--device", "cpu"]  # fmt: skip
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "post-processing chosen on the validation split" in result.stdout
    assert "val Dice without" in result.stdout and "--no-postprocess" in result.stderr
    assert (run_dir / "postprocess.json").is_file()
    folder = RunFolder(run_dir)
    folder.write_postprocess({"rules": {}, "stale": True})
    folder.save_best(
        __import__("segtool.train.model", fromlist=["load_model"]).load_model(folder.model_dir)
    )
    assert not folder.postprocess_file.exists()


def test_volumes_are_post_processed_in_three_dimensions(tmp_path):
    import nibabel as nib

    from segtool.predict.volumes import predict_volumes
    from segtool.split.assign import split_dataset
    from tests.volumes import make_msd

    mri = make_msd(tmp_path / "mri", n=6, test=1)
    split_dataset(mri, val=0.34, test=0.0, seed=3, jobs=1)
    run_dir = tmp_path / "run"
    fit(mri, run_dir, epochs=1, decoder_channels="32,16,16,16,16", **FAST)
    choice = choose_postprocessing(run_dir, device="cpu")
    doc = choice.document
    val = json.loads((run_dir / "split.json").read_text())["val"]
    assert doc["item"] == "case" and doc["unit"] == "voxels" and doc["items"] == len(val) > 0
    result = evaluate_model(
        run_dir, mri, split="val", device="cpu", out=tmp_path / "val", objects=False,
        with_hd95=False,
    )  # fmt: skip
    for name, row in result.summary["per_class"].items():
        assert row["dice"] == pytest.approx(doc["val_dice_with"][name], abs=1e-12), name
    folder = RunFolder(run_dir)
    folder.write_postprocess({"rules": {"edema": Rule(MIN_SIZE, 40).to_json()}})
    predict_volumes(run_dir, mri, tmp_path / "raw", device="cpu", postprocess=False)
    predict_volumes(run_dir, mri, tmp_path / "pp", device="cpu")
    changed = per_slice_differs = False
    for path in sorted((tmp_path / "raw").glob("*.nii.gz")):
        raw = np.asarray(nib.load(path).dataobj)
        done = np.asarray(nib.load(tmp_path / "pp" / path.name).dataobj)
        np.testing.assert_array_equal(done, apply_rules(raw, {1: Rule(MIN_SIZE, 40)}, False))
        changed |= not np.array_equal(raw, done)
        per_slice = np.stack(
            [apply_rules(raw[..., z], {1: Rule(MIN_SIZE, 40)}, False) for z in range(raw.shape[2])],
            axis=-1,
        )
        per_slice_differs |= not np.array_equal(per_slice, done)
    assert changed and per_slice_differs  # the rule acted, on 3-D components
    # an ensemble of the run with itself is the run, volumes too (post-processing shared)
    predict_volumes([run_dir, run_dir], mri, tmp_path / "ens", device="cpu")
    for path in sorted((tmp_path / "pp").glob("*.nii.gz")):
        np.testing.assert_array_equal(
            np.asarray(nib.load(path).dataobj),
            np.asarray(nib.load(tmp_path / "ens" / path.name).dataobj),
        )


def test_multilabel_runs_choose_per_class_bit(tmp_path):
    from tests.synthetic import make_multilabel_dataset

    dataset = make_multilabel_dataset(tmp_path / "ml", n=14, size=32)
    run_dir = tmp_path / "run"
    fit(dataset, run_dir, epochs=1, **FAST)
    doc = choose_postprocessing(run_dir, device="cpu").document
    assert set(doc["val_dice_without"]) == {"square", "disc"}
    for out, postprocess, key in (("w", True, "val_dice_with"), ("wo", False, "val_dice_without")):
        result = evaluate_model(
            run_dir, dataset, split="val", device="cpu", out=tmp_path / out,
            postprocess=postprocess, objects=False, with_hd95=False,
        )  # fmt: skip
        for name, row in result.summary["per_class"].items():
            assert row["dice"] == pytest.approx(doc[key][name], abs=1e-12), (key, name)
