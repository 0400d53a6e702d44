"""The GPU batch probe and the plan after it: the epochs, their steps and the validation
interval are planned for the batch the probe finds (unless given), and the plan table shows
those final values and why. The probe itself needs a GPU; here it is a stand-in on the CPU,
reached through the same planning code with a GPU machine."""

from __future__ import annotations

import pytest

from segtool.train import planning
from segtool.train.choices import Choice
from segtool.train.config import Given
from segtool.train.fingerprint import ClassStats, Fingerprint, Machine
from segtool.train.plan import plan_training
from tests.cli import invoke
from tests.synthetic import make_dataset

H100 = Machine("cuda", "H100", 80.0, 16)


def _fingerprint(n: int) -> Fingerprint:
    return Fingerprint(n, (64, 64), (64, 64), 3, [ClassStats("a", 0.3, n, 500.0)])


def _probed(batch: int) -> Choice:
    return Choice("batch_size", batch, "probed")


def _plan(n: int, probed: Choice | None = None, **given) -> dict:
    plan = plan_training(_fingerprint(n), H100, Given.parse(**given), probed)
    return {c.option: (c.value, c.why) for c in plan.choices}


def test_a_probed_batch_replans_the_epochs_and_their_steps():
    # 3,000 images, 2,100 training. Batch 8: 263 steps a pass (>= 250: epochs of one pass),
    # 3,000 / 263 -> 12 epochs. Batch 64: 33 steps a pass; 3,000 / 33 -> 91 passes (3,003
    # steps) -> 12 epochs of 250. Kept at one pass, batch 64 would train 12 x 33 = 396 steps.
    before = _plan(3000)
    assert before["batch_size"][0] == 8 and "epoch_steps" not in before
    assert before["epochs"] == (12, "about 3000 steps of 263 per epoch")
    after = _plan(3000, _probed(64))
    assert after["batch_size"] == (64, "probed")
    assert after["epoch_steps"][0] == 250
    assert after["epoch_steps"][1].startswith("33 steps a pass in batches of 64: epochs of 250")
    assert after["epochs"] == (12, "about 3003 steps of 250 per epoch")


def test_a_probed_batch_replans_the_validation_interval():
    # 2,000 images, --val 0.5 --test 0: 1,000 training, 1,000 validation. Batch 8: 125 steps a
    # pass -> 12 epochs of 250; 125 validation batches at half a step against 250 steps:
    # k = ceil(62.5 * 0.9 / 25) = 3, at most 12 // 5 = 2 (five validations) -> every 2nd.
    # Batch 64: 16 validation batches, under 20: a short pass, every epoch.
    shares = {"val": 0.5, "test": 0.0}
    assert _plan(2000, **shares)["val_every"][0] == 2
    after = _plan(2000, _probed(64), **shares)
    assert after["val_every"] == (1, "16 validation batches: a short pass, every epoch")
    assert (after["epoch_steps"][0], after["epochs"][0]) == (250, 12)


def test_options_given_stay_whatever_the_probe_finds():
    after = _plan(3000, _probed(64), epochs=30, val_every=4)
    assert after["epochs"] == (30, "given") and after["val_every"] == (4, "given")
    assert "epoch_steps" not in after  # given epochs: one pass each
    given = _plan(3000, _probed(64), epoch_steps=100, batch_size=16)
    assert given["batch_size"] == (16, "given") and given["epoch_steps"] == (100, "given")
    # 2,100 / 16 = 132 steps a pass; 3,000 steps in epochs of 100 -> 30.
    assert given["epochs"] == (30, "about 3000 steps of 100 per epoch")
    # A probe larger than the training split: the split is the batch.
    assert _plan(10, _probed(8))["batch_size"] == (7, "only 7 training images")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU machine, and a probe that finds the largest batch its limit allows."""
    limits = []

    def probe(config, class_map, fp, limit):
        limits.append(limit)
        return max(b for b in planning.PROBE_BATCHES if b <= limit)

    monkeypatch.setattr(planning, "measure_machine", lambda device: H100)
    monkeypatch.setattr(planning, "probe_batch_size", probe)
    return limits


def test_the_plan_table_shows_what_the_probed_batch_plans(tmp_path, fake_gpu):
    # 100 images, 70 training: the probe may go up to 70 // 4 = 17 -> 16. At 16, 5 steps a
    # pass: 3,000 steps need 600 passes, capped at 200 (1,000 steps) -> 10 epochs of 100
    # steps. (At the start's 8 it would be 9 steps a pass, 10 epochs of 180.)
    dataset = make_dataset(tmp_path / "ds", n=100, size=32)
    args = ["train", str(dataset), "--out", str(tmp_path / "run"), "--plan-only"]
    result = invoke(args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert fake_gpu == [17]
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:4]]
        for line in result.stdout.splitlines()
        if line.count("│") >= 4 and line.split("│")[1].strip().startswith("--")
    }
    assert rows["--batch-size"][0] == "16" and "(probed)" in rows["--batch-size"][1]
    assert rows["--epoch-steps"][0] == "100"
    assert rows["--epoch-steps"][1].startswith("5 steps a pass in batches of 16")
    assert rows["--epochs"] == ["10", "about 1000 steps of 100 per epoch"]
    assert rows["--val-every"] == ["1", "1 validation batches: a short pass, every epoch"]


def test_a_given_batch_size_is_not_probed(tmp_path, fake_gpu):
    dataset = make_dataset(tmp_path / "ds", n=100, size=32)
    planned = planning.plan_new_run(
        dataset, planning.dataset_classes(dataset), None, Given.parse(batch_size=4)
    )
    assert fake_gpu == [] and planned.config.batch_size == 4
    # 70 / 4 = 18 steps a pass; 167 passes (3,006 steps) -> 12 epochs of 250.
    assert (planned.config.epoch_steps, planned.config.epochs) == (250, 12)
