"""train --fold k, the cross-validation summary (evaluate --cv) and the paired comparison
(evaluate --compare), each checked against numbers computed here from the masks."""

from __future__ import annotations

import json
import shutil
import statistics

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.masks import read_mask, write_mask
from segtool.split.assign import split_dataset
from segtool.train.loop import fit
from tests.cli import invoke
from tests.synthetic import make_dataset

FAST = {
    "encoder": "resnet18",
    "workers": 0,
    "batch_size": 4,
    "augment": "none",
    "epochs": 1,
    "size": 32,
}


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """A 12-image dataset split into 2 folds (2 test images held out), one run per fold."""
    root = tmp_path_factory.mktemp("cv")
    dataset = make_dataset(root / "ds", n=12, size=32)
    split = split_dataset(dataset, folds=2, test=2, overwrite=True, jobs=1).split
    runs = []
    for k in range(2):
        fit(dataset, root / "runs" / f"fold{k}", fold=k, **FAST)
        runs.append(root / "runs" / f"fold{k}")
    return dataset, split, runs


def test_train_fold_trains_on_the_other_folds(folds):
    _, split, runs = folds
    for k, run in enumerate(runs):
        used = json.loads((run / "split.json").read_text())
        assert used["fold"] == k and used["val"] == split["folds"][k]
        assert used["train"] == split["folds"][1 - k] and used["test"] == split["test"]
        config = json.loads((run / "config.json").read_text())
        assert config["options"]["fold"] == k
        assert config["images"]["val"] == len(split["folds"][k])


def test_train_fold_out_of_range_and_without_folds_is_one_line(folds, tmp_path):
    dataset, _, _ = folds
    out = invoke(["train", str(dataset), "--out", str(tmp_path / "r"), "--fold", "2"])
    assert out.exit_code == 1, out.output
    assert (
        "--fold 2 is out of range:" in out.stderr and "has 2 folds, numbered 0 to 1" in out.stderr
    )
    # One error line; the only other line is the phase line said as measuring began.
    lines = out.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith("measuring ")]
    assert len(errors) == 1 and len(lines) <= 2 and not (tmp_path / "r").exists()
    plain = make_dataset(tmp_path / "plain", n=6, size=32)
    out = invoke(["train", str(plain), "--out", str(tmp_path / "r"), "--fold", "0"])
    assert out.exit_code == 1 and "has no folds; run segtool split DATASET --folds K" in out.stderr


def _evaluate(form: str, *args) -> object:
    """``segtool evaluate --cv|--compare ARGS`` on one process, the device the CPU."""
    return invoke(["evaluate", form, *map(str, args), "-j", "1", "--device", "cpu"])


def _counts(pred: np.ndarray, ref: np.ndarray, c: int) -> tuple[int, int, int]:
    keep = ref != 255
    p, r = (pred == c) & keep, (ref == c) & keep
    return int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())


def test_cv_pools_the_out_of_fold_counts_and_spreads_the_folds(folds, tmp_path):
    dataset, split, runs = folds
    out = _evaluate(
        "--cv",
        *runs,
        dataset,
        "--out",
        tmp_path / "cv",
        "--no-hd95",
    )
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    oof = [s for fold in split["folds"] for s in fold]
    assert summary["n_images"] == len(oof) == 10
    totals = {c: np.zeros(3, int) for c in (1, 2)}
    per_fold = {c: [] for c in (1, 2)}
    for run, fold in zip(runs, split["folds"], strict=True):
        fold_totals = {c: np.zeros(3, int) for c in (1, 2)}
        for stem in fold:
            pred = read_mask(run / "evaluation" / "val" / "predictions" / f"{stem}.png")
            ref = read_mask(dataset / "masks" / f"{stem}.png")
            for c in (1, 2):
                fold_totals[c] += _counts(pred, ref, c)
        for c in (1, 2):
            totals[c] += fold_totals[c]
            tp, fp, fn = fold_totals[c]
            per_fold[c].append(2 * tp / (2 * tp + fp + fn))
    for c, name in ((1, "square"), (2, "disc")):
        tp, fp, fn = totals[c]
        row = summary["per_class"][name]
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
        assert row["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
        spread = summary["cross_validation"]["per_class"][name]["dice"]
        assert spread["folds"] == pytest.approx(per_fold[c], abs=1e-12)
        assert spread["mean"] == pytest.approx(statistics.mean(per_fold[c]), abs=1e-12)
        assert spread["sd"] == pytest.approx(statistics.stdev(per_fold[c]), abs=1e-12)
    assert [r["fold"] for r in summary["cross_validation"]["runs"]] == [0, 1]
    assert "mean ± sd over folds" in out.stdout and "pooled: 10 out-of-fold images" in out.stdout
    again = invoke(
        ["evaluate", "--cv", *map(str, runs), str(dataset), "--out", str(tmp_path / "cv")]
    )
    assert again.exit_code == 1 and "pass --overwrite" in again.stderr


def test_cv_refuses_one_fold_twice(folds, tmp_path):
    dataset, _, runs = folds
    out = invoke(["evaluate", "--cv", str(runs[0]), str(runs[0]), str(dataset)])
    assert out.exit_code == 1 and "both validate on" in out.stderr
    out = invoke(["evaluate", "--cv", *map(str, runs), str(dataset), "--gallery", "2"])
    assert out.exit_code != 0 and "--gallery does not go with --cv" in out.output
    out = invoke(["evaluate", "--cv", str(runs[0]), str(dataset)])
    assert out.exit_code != 0 and "--cv takes the runs of 2 or more folds" in out.output


CMAP = make_class_map(["_background_", "cat", "dog"])


def _compare_folders(root, n=9, seed=0):
    rng = np.random.default_rng(seed)
    for folder in ("ref", "a", "b"):
        (root / folder).mkdir(parents=True)
    CMAP.save(root / "ref" / "classes.json")
    masks = {}
    for i in range(n):
        ref = rng.integers(0, 3, (12, 12)).astype(np.uint8)
        ref[:2] = 255 if i % 3 == 0 else ref[:2]
        if i == 4:
            ref[ref == 2] = 0  # an image without dog: B predicts some, A none
        a = np.where(rng.random((12, 12)) < 0.7, ref, rng.integers(0, 3, (12, 12))).astype(np.uint8)
        b = np.where(rng.random((12, 12)) < 0.5, ref, rng.integers(0, 3, (12, 12))).astype(np.uint8)
        a[a == 255] = 0
        b[b == 255] = 1
        if i == 4:
            a[a == 2] = 0
            b[0, 0] = 2
        stem = f"im{i}"
        for folder, mask in (("ref", ref), ("a", a), ("b", b)):
            write_mask(root / folder / f"{stem}.png", mask, CMAP)
        masks[stem] = (ref, a, b)
    return masks


def test_compare_differences_intervals_and_wins_are_computed_here(tmp_path):
    masks = _compare_folders(tmp_path)
    out = _evaluate(
        "--compare",
        tmp_path / "a",
        tmp_path / "b",
        tmp_path / "ref",
        "--out",
        tmp_path / "cmp",
        "--seed",
        "3",
        "--no-objects",
    )
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    stems = sorted(masks)
    # counts[side][image, class] = (tp, fp, fn)
    counts = np.array(
        [
            [[_counts(masks[s][side], masks[s][0], c) for c in (1, 2)] for s in stems]
            for side in (1, 2)
        ],
        dtype=float,
    )

    def dice(table):  # table: images x classes x 3 -> pooled Dice per class
        tp, fp, fn = table.sum(axis=0).T
        return 2 * tp / (2 * tp + fp + fn)

    rng = np.random.default_rng(3)
    picks = rng.integers(0, len(stems), size=(2000, len(stems)))  # images in name order
    diffs = np.array([dice(counts[0][row]) - dice(counts[1][row]) for row in picks])
    mean_diffs = diffs.mean(axis=1)
    for j, name in enumerate(("cat", "dog")):
        row = doc["per_class"][name]["dice"]
        a, b = dice(counts[0])[j], dice(counts[1])[j]
        assert (row["a"], row["b"]) == pytest.approx((a, b), abs=1e-12)
        assert row["difference"] == pytest.approx(a - b, abs=1e-12)
        assert row["ci95"] == pytest.approx(np.percentile(diffs[:, j], [2.5, 97.5]), abs=1e-12)
    mean = doc["mean"]["dice"]
    assert mean["difference"] == pytest.approx((dice(counts[0]) - dice(counts[1])).mean())
    assert mean["ci95"] == pytest.approx(np.percentile(mean_diffs, [2.5, 97.5]), abs=1e-12)
    # Wins on each image's Dice, 1 where the class is in neither mask.
    per_image = np.ones((2, len(stems), 2))
    for side in (0, 1):
        tp, fp, fn = np.moveaxis(counts[side], -1, 0)
        den = 2 * tp + fp + fn
        np.divide(2 * tp, den, out=per_image[side], where=den > 0)
    for j, name in enumerate(("cat", "dog")):
        a, b = per_image[0][:, j], per_image[1][:, j]
        assert doc["per_class"][name]["wins"] == {
            "a": int((a > b).sum()),
            "b": int((b > a).sum()),
            "ties": int((a == b).sum()),
        }
    a, b = per_image[0].mean(axis=1), per_image[1].mean(axis=1)
    assert doc["mean"]["wins"]["a"] == int((a > b).sum())
    assert doc["bootstrap"]["paired"] and doc["bootstrap"]["seed"] == 3
    assert "wins A / B / ties" in out.stdout
    assert (tmp_path / "cmp" / "a" / "summary.json").is_file()


def test_compare_refuses_a_run_beside_a_folder_and_wrong_paths(tmp_path, folds):
    _compare_folders(tmp_path)
    _, _, runs = folds
    out = invoke(
        ["evaluate", "--compare", str(runs[0]), str(tmp_path / "b"), str(tmp_path / "ref")]
    )
    assert out.exit_code == 1 and "is a run and" in out.stderr
    out = invoke(["evaluate", "--compare", str(tmp_path / "a"), str(tmp_path / "ref")])
    assert out.exit_code != 0 and "--compare takes A B REFERENCE" in out.output


def test_compare_two_runs_on_their_test_split(folds, tmp_path):
    dataset, split, runs = folds
    out = _evaluate(
        "--compare",
        *runs,
        dataset,
        "--out",
        tmp_path / "c",
        "--no-hd95",
    )
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert doc["n_images"] == len(split["test"]) == 2
    a = json.loads((tmp_path / "c" / "a" / "summary.json").read_text())
    assert doc["per_class"]["disc"]["dice"]["a"] == a["per_class"]["disc"]["dice"]


def test_cv_on_a_volume_folder_pools_cases(tmp_path):
    from tests.volumes import make_msd

    root = make_msd(tmp_path / "mri", n=4, test=0)
    split = split_dataset(root, folds=2, jobs=1).split
    runs = []
    for k in range(2):
        run = tmp_path / f"fold{k}"
        fit(root, run, fold=k, **{**FAST, "size": None, "decoder_channels": "16,16,16,16,16"})
        runs.append(run)
        assert json.loads((run / "split.json").read_text())["val"] == split["folds"][k]
    out = _evaluate(
        "--cv",
        *runs,
        root,
        "--out",
        tmp_path / "cv",
        "--no-hd95",
    )
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert summary["volumes"] and summary["n_images"] == 4
    assert (tmp_path / "cv" / "per_case.csv").is_file()
    folds_tp = sum(
        json.loads((run / "evaluation" / "val" / "summary.json").read_text())["per_class"]["edema"][
            "tp"
        ]
        for run in runs
    )
    assert summary["per_class"]["edema"]["tp"] == folds_tp
    assert "out-of-fold cases" in out.stdout


def test_cv_scores_each_fold_without_the_post_processing_chosen_on_it(folds, tmp_path):
    """A run's post-processing was chosen on its own validation fold: scoring that fold with it
    would flatter the run, so the out-of-fold predictions are the model's own."""
    dataset, _, runs = folds
    copies = []
    for run in runs:
        copy = tmp_path / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluation"))
        copies.append(copy)
    plain = _evaluate("--cv", *copies, dataset, "--out", tmp_path / "plain", "--no-hd95")
    assert plain.exit_code == 0, plain.output
    for copy in copies:  # a rule that would remove every predicted square
        doc = {"rules": {"square": {"rule": "min_size", "min_size": 2**20}}}
        (copy / "postprocess.json").write_text(json.dumps(doc))
    chosen = _evaluate(
        "--cv", *copies, dataset, "--out", tmp_path / "chosen", "--no-hd95", "--overwrite"
    )
    assert chosen.exit_code == 0, chosen.output
    pooled = [
        json.loads((tmp_path / name / "summary.json").read_text())["per_class"]["square"]
        for name in ("plain", "chosen")
    ]
    assert [(p["tp"], p["fp"], p["fn"]) for p in pooled[:1]] * 2 == [
        (p["tp"], p["fp"], p["fn"]) for p in pooled
    ]
    assert pooled[0]["tp"] + pooled[0]["fp"] > 0  # the rule would have changed the score
