"""segtool train on a volume folder prints the same plan table as for images: patch size,
batch size and epochs, each with its reason in cases, slices and voxels, measured from the
NIfTI headers; the expected numbers are worked out here from how the tiny folder is made."""

from __future__ import annotations

import json
import math
import re

import pytest

from segtool.split.assign import split_dataset
from segtool.train.config import Given
from segtool.train.fingerprint import Machine
from segtool.train.volume_plan import VolumeFingerprint, plan_volumes
from tests.cli import invoke
from tests.volumes import SHAPE, make_msd

#: make_msd(n=8): 8 cases of 32 x 32 x 8 voxels on a RAS grid, so axial slices are the 8
#: planes along the third voxel axis, each 32 x 32.
CASES = 8
#: The default shares leave 70 % of the cases to train on: 5 of 8, 40 slices; 4 a batch on
#: a CPU: 10 steps an epoch; about 300 steps: 30 epochs.
TRAIN_CASES = int(CASES * (1 - 0.15 - 0.15))
TRAIN_SLICES = TRAIN_CASES * SHAPE[2]
STEPS = math.ceil(TRAIN_SLICES / 4)
EPOCHS = max(math.ceil(300 / STEPS), 10)


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = make_msd(tmp_path_factory.mktemp("mri"), n=CASES, test=1)
    split_dataset(root, val=0.25, test=0.15, seed=3, jobs=1)
    return root


def _rows(text: str) -> dict[str, tuple[str, str]]:
    """The plan table's rows: option -> (value, why), from the drawn table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 3 and cells[0].startswith("--"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_plan_only_shows_patch_batch_and_epochs_in_cases_and_voxels(mri, tmp_path):
    result = invoke(["train", str(mri), "--out", str(tmp_path / "run"), "--plan-only",
                     "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows["--crop"] == ("—", "median axial slice 32x32 voxels fits the model whole: "
                                   "whole slices")  # fmt: skip
    assert rows["--batch-size"] == ("4", "CPU: small batches, more steps per second of compute")
    assert rows["--epochs"] == (
        str(EPOCHS),
        f"about 300 steps of {STEPS} per epoch ({TRAIN_CASES} training cases of 8 slices, "
        f"{math.prod(SHAPE):,} voxels each)",
    )
    assert not (tmp_path / "run").exists()  # --plan-only writes nothing


def test_a_budget_says_the_epochs_are_refitted_and_given_options_win(mri, tmp_path):
    result = invoke(["train", str(mri), "--out", str(tmp_path / "run"), "--plan-only",
                     "--device", "cpu", "--time-budget", "2m", "--batch-size", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows["--batch-size"] == ("8", "given")
    value, why = rows["--epochs"]
    assert value == str(max(math.ceil(300 / (TRAIN_SLICES // 8)), 10))
    assert why.endswith("; re-fitted to the 120s budget after each epoch, from its time")


def test_training_prints_the_plan_and_keeps_it_in_config_json(mri, tmp_path):
    run = tmp_path / "run"
    result = invoke(["train", str(mri), "--out", str(run), "--epochs", "1", "--device", "cpu",
                     "--encoder", "resnet18", "--decoder-channels", "32,16,16,16,16",
                     "--workers", "0", "--augment", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(result.stderr)
    assert rows["--epochs"] == ("1", "given") and rows["--batch-size"][0] == "4"
    assert "train / " in result.stderr and " val cases" in result.stderr
    plan = json.loads((run / "config.json").read_text())["plan"]
    assert plan["fingerprint"] == {
        "cases": CASES, "channels": 2, "axis": "axial", "slices": 8,
        "slice_shape": [32, 32], "voxels": math.prod(SHAPE),
    }  # fmt: skip
    assert json.loads((run / "config.json").read_text())["options"]["batch_size"] == 4


def test_slices_over_the_devices_limit_are_trained_as_patches():
    """A median slice of 300 x 512 voxels on a CPU (256 at most whole): patches of 256."""
    fp = VolumeFingerprint(cases=20, channels=1, axis="axial", slices=100,
                           slice_shape=(300, 512), voxels=300 * 512 * 100)  # fmt: skip
    plan = plan_volumes(fp, Machine("cpu", "x86_64", 8.0, 2), Given.parse())
    crop = next(c for c in plan.choices if c.option == "crop")
    assert crop.value == 256
    assert crop.why == "median axial slice 512x300 voxels, over 256 -> patches 256x256"
    # 14 training cases of 100 slices, 4 a batch: 350 steps an epoch; at least 10 epochs.
    assert plan.options()["epochs"] == 10 and plan.options()["batch_size"] == 4
