"""segtool train on a volume folder: slices of train cases only, in_channels from the
sequences, validation Dice per case in 3-D, the loss falls, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segtool.core.errors import SegtoolError
from segtool.split.assign import make_split, split_dataset
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist
from segtool.train.loop import fit
from segtool.train.model import load_model
from segtool.train.runfolder import read_metrics
from segtool.train.volume_data import VolumeData, load_volume_data
from tests.volumes import make_msd

FAST = {
    "encoder": "resnet18",
    "workers": 0,
    "batch_size": 8,
    "augment": "none",
    "lr": 3e-3,
    "decoder_channels": "32,16,16,16,16",
}


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = make_msd(tmp_path_factory.mktemp("mri"), n=8, test=1)
    split_dataset(root, val=0.25, test=0.15, seed=3, jobs=1)
    return root


@pytest.fixture(scope="module")
def trained(mri, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = fit(mri, run, epochs=6, **FAST)
    return run, result


def test_split_and_slices_keep_cases_apart(mri, tmp_path):
    split = json.loads((mri / "split.json").read_text())
    cases = [f"BRATS_{i:03d}" for i in range(8)]
    assert split == make_split(cases, 0.25, 0.15, 3)
    data = load_volume_data(mri, tmp_path, TrainConfig(**FAST), False, Dist())
    assert isinstance(data, VolumeData)
    assert [v.case for v in data.train] == split["train"]
    assert [v.case for v in data.val] == split["val"]
    train_cases = {v.case for v in data.train}
    val_cases = {v.case for v in data.val}
    test_cases = set(split["test"])
    assert not (train_cases & val_cases) and not (train_cases & test_cases)
    assert not (val_cases & test_cases) and val_cases and train_cases


def test_loss_falls_and_model_takes_every_sequence(trained):
    run, _ = trained
    rows = read_metrics(run / "metrics.csv")
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"]), rows
    model = load_model(run / "model")
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2
    config = json.loads((run / "config.json").read_text())
    volumes = config["volumes"]
    assert volumes["channels"] == ["FLAIR", "T1"] and volumes["axis"] == "axial"
    assert "non-zero" in volumes["standardization"]
    split = json.loads((run / "split.json").read_text())
    assert set(volumes["statistics"]) == set(split["train"]) | set(split["val"])
    assert (run / "cache").is_dir()


def test_validation_dice_is_the_mean_of_3d_case_dice(trained, mri, tmp_path):
    run, result = trained
    model = load_model(run / "model").eval()
    data = load_volume_data(
        mri, tmp_path, TrainConfig(**FAST, cache=str(run / "cache")), False, Dist()
    )
    per_case = []
    for volume in data.val:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.asarray(volume.image, dtype=np.float32)))
        pred = logits.argmax(1).numpy()  # (S, H, W)
        ref = np.asarray(volume.label)
        scores = []
        for c in (1, 2):
            a, b = ref == c, pred == c
            total = a.sum() + b.sum()
            scores.append(2 * (a & b).sum() / total if total else np.nan)
        per_case.append(scores)
    per_class = np.nanmean(np.array(per_case, dtype=float), axis=0)
    expected = float(np.nanmean(per_class))
    rows = read_metrics(run / "metrics.csv")
    best = rows[result.best_epoch - 1]
    assert float(best["val_dice"]) == pytest.approx(expected, abs=1e-6)
    assert result.best_dice == pytest.approx(expected, abs=1e-6)


def test_resume_continues(trained, mri, tmp_path):
    import shutil

    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = fit(mri, copy, resume=True, epochs=7, **FAST)
    assert result.epochs_done == 7
    assert load_checkpoint(copy / "checkpoints" / "last.pt")["epoch"] == 7
    assert [int(r["epoch"]) for r in read_metrics(copy / "metrics.csv")] == list(range(1, 8))


def test_bad_axis(mri, tmp_path):
    with pytest.raises(
        SegtoolError, match="--axis 'upward' is not one of axial, coronal, sagittal"
    ):
        fit(mri, tmp_path / "run", axis="upward", **FAST)
