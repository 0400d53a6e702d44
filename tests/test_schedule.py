"""The learning-rate schedule: warm-up and cosine decay, and what happens when a run's length
changes: a smooth continuation, or a warm restart when asked."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from segtool.train.config import TrainConfig
from segtool.train.curves import read_metrics
from segtool.train.loop import fit
from segtool.train.schedule import FLOOR, WarmupCosine, warmup_steps
from tests.synthetic import make_dataset
from tests.test_train import FAST, StopAfter


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


def test_warmup_then_cosine():
    s = WarmupCosine(total=110, warmup=10)
    assert [s(i) for i in range(3)] == [0.1, 0.2, 0.3]
    assert s(10) == 1.0
    assert s(60) == pytest.approx(FLOOR + (1 - FLOOR) * 0.5)  # half way: the cosine's middle
    assert s(110) == pytest.approx(FLOOR) and s(500) == pytest.approx(FLOOR)


def _largest_jump(s: WarmupCosine, steps: range) -> float:
    return max(abs(s(i + 1) - s(i)) for i in steps)


def test_extending_a_finished_run_does_not_jump():
    s = WarmupCosine(total=100, warmup=10)
    before = s(100)
    s.retarget(100, 200)  # --resume --epochs twice as many, after the run finished
    assert s(100) == before and _largest_jump(s, range(100, 200)) < 1e-12  # stays at the floor
    # Planned afresh for 200 steps (what --resume did before), step 100 would be at 0.505.
    assert WarmupCosine(200, 10)(101) > 50 * before


def test_extending_mid_run_continues_from_the_current_rate():
    s = WarmupCosine(total=100, warmup=10)
    now = s(50)
    s.retarget(50, 150)
    assert s(50) == now and s(150) == pytest.approx(FLOOR)
    assert all(s(i + 1) <= s(i) for i in range(50, 150))  # decays, never rises
    assert _largest_jump(s, range(50, 150)) < (now - FLOOR) * math.pi / 2 / 100 + 1e-9


def test_shrinking_decays_smoothly_to_the_new_end():
    s = WarmupCosine(total=100, warmup=10)
    now = s(40)
    s.retarget(40, 50)  # 60 steps fewer: ten steps left
    assert s(40) == now and s(50) == pytest.approx(FLOOR)
    # Re-planned from scratch for 50 steps, the rate would fall by 26x in one go.
    assert now / WarmupCosine(50, 10)(41) > 1.5
    assert _largest_jump(s, range(40, 50)) < (now - FLOOR) * math.pi / 2 / 10 + 1e-9


def test_a_warm_restart_rises_to_the_peak_again():
    s = WarmupCosine(total=100, warmup=10)
    s.restart(100, 200, 10)
    assert s(100) == pytest.approx(0.1) and s(109) == 1.0
    assert s(200) == pytest.approx(FLOOR)


def test_a_warmup_under_way_finishes_first():
    s = WarmupCosine(total=100, warmup=10)
    s.retarget(5, 200)
    assert s(5) == 0.6 and s(10) == 1.0 and s(200) == pytest.approx(FLOOR)


def _rates(run):
    return [float(r["lr"]) for r in read_metrics(run / "metrics.csv")]


def test_resume_with_more_epochs_continues_the_rate(easy, tmp_path):
    run = tmp_path / "run"
    fit(easy, run, TrainConfig(epochs=4, **FAST), reporter=StopAfter(2))  # 3 steps an epoch
    fit(easy, run, resume=True, epochs=6)
    rates = [r / FAST["lr"] for r in _rates(run)]
    assert len(rates) == 6 and all(b <= a for a, b in itertools.pairwise(rates[1:]))
    # From step 6 (epoch 3's start, rate rates[2]) the decay is re-planned to end at step 18:
    # the cosine goes on from its phase there, stretched over the 12 steps left.
    start = math.acos(2 * (rates[2] - FLOOR) / (1 - FLOOR) - 1) / math.pi
    for epoch, step in ((5, 12), (6, 15)):
        phase = start + (1 - start) * (step - 6) / (18 - 6)
        expected = FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * phase))
        assert rates[epoch - 1] == pytest.approx(expected, rel=1e-4)


def test_resume_with_a_warm_restart(easy, tmp_path):
    run = tmp_path / "run"
    fit(easy, run, TrainConfig(epochs=3, **FAST))
    fit(easy, run, resume=True, epochs=5, warm_restart=True)
    rates = _rates(run)  # the rate at each epoch's first step
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    n = state["scheduler"]["last_epoch"] // 5  # steps per epoch
    w = warmup_steps(2 * n, n, 1.0)  # the restart warms up over a tenth of its two epochs
    assert rates[3] == pytest.approx(FAST["lr"] * FLOOR)  # the first run ended at the floor;
    # the restart warmed up to the peak in w steps and decays to the floor at the end of epoch 5
    progress = (n - w) / (2 * n - w)
    cosine = FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
    assert rates[4] == pytest.approx(FAST["lr"] * cosine)


@pytest.mark.parametrize(
    ("epochs", "per_epoch", "warmup_epochs", "expected"),
    [
        (30, 20, 1.0, 20),  # a long run: one epoch (3 % of 600 steps)
        (1, 20, 1.0, 2),  # one planned epoch: 10 % of its 20 steps, not all of them
        (3, 20, 1.0, 6),  # three epochs: 10 % of 60
        (2, 3, 1.0, 1),  # 6 steps: ceil(0.6), one step
        (10, 20, 0.0, 1),  # no warm-up asked: still one step (the rate starts at the peak)
        (10, 20, 0.5, 10),  # half an epoch, under 10 % of 200
    ],
)
def test_the_warmup_is_at_most_a_tenth_of_the_run(epochs, per_epoch, warmup_epochs, expected):
    assert warmup_steps(epochs * per_epoch, per_epoch, warmup_epochs) == expected


def test_a_one_epoch_run_trains_at_its_peak_and_ends_at_the_floor():
    total = 20
    s = WarmupCosine(total, warmup_steps(total, total, 1.0))
    rates = [s(i) for i in range(total)]
    assert rates[1] == 1.0 and max(rates) == 1.0  # the peak in the second step
    assert sum(r > 0.5 for r in rates) >= total // 2  # half the run above half the peak
    assert s(total) == pytest.approx(FLOOR)
