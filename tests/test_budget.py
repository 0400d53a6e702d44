"""The time budget under load, on an injected clock (never the machine's wall time): the first
steps timed within a share of the budget, re-planning from the run's own times, an epoch cut
short when steps slow down mid-run, the schedule compressed to end at its floor; and a run
stopped in any epoch (Ctrl-C, SIGTERM, a crash) left resumable at its last step interval."""

from __future__ import annotations

import itertools
import json
from functools import partial

import pytest
import torch

from segtool.train import loop, pacing
from segtool.train.budget import TIMING_SHARE, Budget
from segtool.train.checkpoint import load_checkpoint
from segtool.train.curves import read_metrics
from segtool.train.loop import fit
from segtool.train.pacing import Pacer
from segtool.train.schedule import FLOOR, WarmupCosine
from segtool.train.trainer import Trainer
from tests.synthetic import make_dataset
from tests.test_train import FAST

#: 12 training images in batches of 2: 6 steps an epoch; 4 validation images.
SMALL = {**FAST, "batch_size": 2, "size": 32}


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


class Machine:
    """A clock that moves only as the run works: each training step takes `step` seconds
    (`slow_from` on, `slow` seconds: load arriving mid-run), each validation pass 2 s. It
    records the rate each step trained at."""

    def __init__(self, step: float = 1.0, slow_from: int | None = None, slow: float = 1.0):
        self.now, self.step, self.slow_from, self.slow = 0.0, step, slow_from, slow
        self.steps, self.rates = 0, []

    def __call__(self) -> float:
        return self.now

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(loop, "Budget", partial(Budget, clock=self))
        step, validate = Trainer.train_step, Trainer.validate
        machine = self

        def timed_step(self, batch):
            machine.steps += 1
            slow = machine.slow_from is not None and machine.steps >= machine.slow_from
            machine.now += machine.slow if slow else machine.step
            machine.rates.append(self.run.learner.optimizer.param_groups[0]["lr"])
            return step(self, batch)

        def timed_validation(self, batches=None):
            machine.now += 2.0
            return validate(self, batches)

        monkeypatch.setattr(Trainer, "train_step", timed_step)
        monkeypatch.setattr(Trainer, "validate", timed_validation)


@pytest.fixture
def no_ending(monkeypatch):
    """A world where nothing runs after the last epoch (`fit` alone, no post-processing
    chosen): the budget keeps no reserve for it, so these tests' numbers are the epochs'
    alone (tests/test_budget_margins.py tests the reserve)."""
    monkeypatch.setattr(pacing, "ENDING_PASSES", 0)


@pytest.mark.usefixtures("no_ending")
def test_load_arriving_mid_run_cuts_the_epoch_and_the_rate_ends_at_its_floor(
    easy, tmp_path, monkeypatch
):
    """Steps of 1 s, then 5 s from the 47th (epoch 8's 5th): the run re-plans after each
    epoch from its real times (8 s, then 16 s: 9 epochs, down from 12); epoch 9, started at
    72 s, fits only in part, and is cut when the next step would not leave time to validate
    (98 % of the budget is the run's): 4 of its 6 steps (to 92 s), validated by 94 s. The
    schedule, compressed from the start of epoch 9 to end there, trains its last step at
    the floor."""
    machine = Machine(step=1.0, slow_from=47, slow=5.0)
    machine.install(monkeypatch)
    result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    assert machine.now <= 100.0
    assert result.stopped == "time budget" and result.cut is not None
    done, steps = result.cut
    assert (done, steps) == (4, 6) and machine.now == 94.0
    assert (result.epochs_done, result.planned_epochs) == (9, 12)  # re-planned: fewer
    assert machine.steps == 6 * (result.epochs_done - 1) + done
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, result.epochs_done + 1))
    # The schedule was compressed to end where the budget cut the run: the last step trains
    # at the floor, and the rate never rose after its peak.
    peak = SMALL["lr"]
    assert machine.rates[-1] == pytest.approx(peak * FLOOR)
    top = machine.rates.index(max(machine.rates))
    after = machine.rates[top:]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(after))
    assert max(machine.rates) == pytest.approx(peak)  # the warm-up reached the peak
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["epochs"] == result.epochs_done  # the last re-plan


@pytest.mark.usefixtures("no_ending")
def test_a_quiet_run_is_not_cut_and_fits_its_plan(easy, tmp_path, monkeypatch):
    """Steps of 1 s throughout: the epochs fitted from epoch 1's times run to the end of
    the plan (within the budget), none cut, the rate at the floor at the end."""
    machine = Machine(step=1.0)
    machine.install(monkeypatch)
    result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    assert machine.now <= 100.0 and result.cut is None
    # Fitted after 5 steps (5 s, the timing share of 100 s), validation guessed at half a
    # step a batch: 12 epochs of 7.3 s in the 93 s left (2 % kept for finishing); re-planned
    # once epoch 1 is measured (8 s: 6 steps and 2 s of validation): 12 again, which the run
    # then trains, in 96 s.
    assert result.planned_epochs == (100 - 5 - 2) // 7.3 == 1 + round((98 - 8) / 8 - 0.3) == 12
    assert result.epochs_done == 12 and result.stopped == "finished"
    assert machine.now == 96.0
    assert machine.rates[-1] == pytest.approx(SMALL["lr"] * FLOOR, rel=0.2)


def test_timing_the_first_steps_takes_at_most_a_share_of_the_budget():
    budget = Budget(180.0)
    assert TIMING_SHARE * 180 == 9.0
    # Steps of 13.5 s (a busy machine): the first step already took the share, so it decides.
    assert budget.first_step_time([13.5]) == 13.5
    # Quick steps: two warm steps, then the median of five timed ones.
    assert budget.first_step_time([3.0, 2.0, 0.1, 0.2, 0.1, 0.3]) is None
    assert budget.first_step_time([3.0, 2.0, 0.1, 0.2, 0.1, 0.3, 0.2]) == 0.2
    # An epoch that ended before enough steps were timed: those there are.
    assert budget.first_step_time([3.0, 0.4, 0.2], final=True) == 0.2


def test_the_step_time_follows_load_arriving_within_two_steps():
    now = [0.0]
    pacer = Pacer(lambda: now[0])
    for seconds in [1.0] * 10 + [5.0, 5.0]:
        pacer.mark()
        now[0] += seconds
    pacer.mark()
    assert pacer.step_time() == 5.0  # the window's mean would say 1.8
    # One slow read of a GPU's queue (every tenth step) is not load.
    pacer = Pacer(lambda: now[0])
    for seconds in [0.1] * 9 + [1.0] + [0.1] * 2:
        pacer.mark()
        now[0] += seconds
    pacer.mark()
    assert pacer.step_time() == pytest.approx(0.19)


def test_the_last_step_that_fits():
    now = [40.0]
    budget = Budget(100.0, started=0.0, clock=lambda: now[0])
    # 60 s left, 10 of them to validate and save, steps of 4 s: 12 more steps (20..31).
    assert budget.last_step(20, 4.0, 10.0) == 31
    now[0] = 87.0  # 3 s left after the closing: not even the next step
    assert budget.last_step(32, 4.0, 10.0) == 31
    assert Budget(None).last_step(5, 1.0, 0.0) is None


def test_compressing_the_schedule_every_step_ends_at_the_floor():
    """Re-planned to the same end at every step, the rates are the plain schedule's; moved
    to an earlier end, they decay smoothly and the last step trains at the floor."""
    plain, again = WarmupCosine(100, 10), WarmupCosine(100, 10)
    rates = []
    for step in range(100):
        again.retarget(step, 100)
        rates.append(again(step))
    assert rates == pytest.approx([plain(step) for step in range(100)])
    cut = WarmupCosine(100, 10)
    rates = [cut(step) for step in range(40)]
    for step in range(40, 71):
        cut.retarget(step, 70)  # the budget ends at step 70
        rates.append(cut(step))
    assert rates[-1] == pytest.approx(FLOOR)
    assert all(b <= a for a, b in itertools.pairwise(rates[10:]))


def test_a_run_fitted_shorter_than_planned_shortens_its_warm_up():
    """Planned for 1,000 steps with a warm-up of 100; the budget leaves 100: the warm-up is a
    tenth of those, so the run trains at its peak, not warming up all along."""
    s = WarmupCosine(1000, 100)
    s.retarget(5, 100)
    assert s(9) == 1.0 and s(100) == pytest.approx(FLOOR)


def assert_same_run(straight, resumed) -> None:
    """The two run folders end with the same weights, losses and learning rates."""
    a = load_checkpoint(straight / "checkpoints/last.pt")["model"]
    b = load_checkpoint(resumed / "checkpoints/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows, again = read_metrics(straight / "metrics.csv"), read_metrics(resumed / "metrics.csv")
    assert [r["train_loss"] for r in again] == [r["train_loss"] for r in rows]
    assert [r["lr"] for r in again] == [r["lr"] for r in rows]


class StepInterrupt:
    """Ctrl-C (or another exception) from inside the `k`-th training step of the run."""

    def __init__(self, k: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.k, self.exc, self.calls = k, exc, 0

    def install(self, monkeypatch) -> None:
        step, interrupt = Trainer.train_step, self

        def train_step(self, batch):
            interrupt.calls += 1
            if interrupt.calls == interrupt.k:
                raise interrupt.exc("stopped")
            return step(self, batch)

        monkeypatch.setattr(Trainer, "train_step", train_step)


def test_ctrl_c_in_epoch_1_keeps_the_last_step_interval_and_resume_matches(
    easy, tmp_path, monkeypatch
):
    options = {**SMALL, "epochs": 2, "augment": "light"}
    fit(easy, tmp_path / "straight", **options)
    monkeypatch.setattr(pacing, "SAVE_EVERY", 0.0)  # a checkpoint before every step
    StepInterrupt(4).install(monkeypatch)
    stopped = fit(easy, tmp_path / "resumed", **options)
    assert stopped.stopped == "interrupted" and stopped.kept
    assert (stopped.epochs_done, stopped.saved_steps) == (0, 3)
    state = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert state["epoch"] == 0 and state["within"]["steps"] == 3
    monkeypatch.undo()
    resumed = fit(easy, tmp_path / "resumed", resume=True)
    assert resumed.epochs_done == 2 and resumed.stopped == "finished"
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def _train_cli(dataset, run, *more, epochs=2):
    from tests.cli import invoke

    args = ["train", str(dataset), "--out", str(run), "--epochs", str(epochs), "--encoder", "resnet18",
            "--workers", "0", "--batch-size", "2", "--size", "32", *more]  # fmt: skip
    return invoke(args)


def test_cli_ctrl_c_in_epoch_1_prints_the_command_to_continue(easy, tmp_path, monkeypatch):
    monkeypatch.setattr(pacing, "SAVE_EVERY", 0.0)
    StepInterrupt(3).install(monkeypatch)
    result = _train_cli(easy, tmp_path / "run")
    assert result.exit_code == 130
    expected = f"holds 2 steps of epoch 1; continue with: segtool train {easy} --out "
    assert expected in result.stderr and f"{tmp_path / 'run'} --resume" in result.stderr
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["within"]["steps"] == 2


def test_cli_a_crash_in_epoch_1_leaves_a_resumable_run(easy, tmp_path, monkeypatch):
    monkeypatch.setattr(pacing, "SAVE_EVERY", 0.0)
    StepInterrupt(3, RuntimeError).install(monkeypatch)
    result = _train_cli(easy, tmp_path / "run")
    assert result.exit_code == 1
    assert f"once fixed, continue with: segtool train {easy} --out" in result.stderr
    monkeypatch.undo()
    resumed = _train_cli(easy, tmp_path / "run", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert len(read_metrics(tmp_path / "run/metrics.csv")) == 2


def test_an_interrupted_overwrite_keeps_the_old_run(easy, tmp_path, monkeypatch):
    old = _train_cli(easy, tmp_path / "run", epochs=1)
    assert old.exit_code == 0
    before = (tmp_path / "run/checkpoints/last.pt").read_bytes()
    monkeypatch.setattr(pacing, "SAVE_EVERY", 0.0)
    StepInterrupt(3).install(monkeypatch)
    result = _train_cli(easy, tmp_path / "run", "--overwrite")
    assert result.exit_code == 130 and "discarded" in result.stderr
    assert "--resume" not in result.stderr
    assert (tmp_path / "run/checkpoints/last.pt").read_bytes() == before


def test_the_summary_says_the_budget_cut_the_run(tmp_path, capsys):
    from segtool.cli.train_progress import print_result as _print_result
    from segtool.train.runstate import FitResult

    result = FitResult(tmp_path, 3, 0.8, {"a": 0.8}, 4, "time budget", planned_epochs=9,
                       cut=(40, 100))  # fmt: skip
    _print_result(result, tmp_path / "ds", tmp_path / "run")
    out = capsys.readouterr().out
    assert "stopped at the time budget after 4 of 9 planned epochs" in out
    assert "epoch 4 cut short after 40 of 100 steps" in out and "finished" not in out


@pytest.mark.usefixtures("no_ending")
def test_a_volume_folder_trains_within_its_budget(tmp_path, monkeypatch):
    """Volumes take --time-budget too: their epochs are re-fitted from the run's own times and
    the schedule compressed to end at the budget (1 s a step, 2 s a validation, 60 s)."""
    from segtool.split.assign import split_dataset
    from tests.test_train_volumes import FAST as VOLUME_FAST
    from tests.volumes import make_msd

    mri = make_msd(tmp_path / "mri", n=8, test=1)
    split_dataset(mri, val=0.25, test=0.15, seed=3, jobs=1)
    machine = Machine(step=1.0)
    machine.install(monkeypatch)
    result = fit(mri, tmp_path / "run", time_budget=60, clock=0.0, **VOLUME_FAST)
    assert machine.now <= 60.0 and 1 <= result.epochs_done < 30  # not the default 30
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == result.epochs_done
    assert machine.rates[-1] == pytest.approx(VOLUME_FAST["lr"] * FLOOR, rel=0.2)


def test_the_budget_counts_from_the_process_start():
    """segtool train's budget counts the interpreter's own start-up (from /proc on Linux), on
    hand-made clocks: a process started 250 ticks (2.5 s at 100 Hz) after boot, read 10 s
    after boot, started 7.5 s before `now`; its age is held to 0..60 s."""
    from segtool.cli.train_progress import started_at

    fields = ["S", *["0"] * 18, "250", "0"]  # fields 3..23 after "(comm)": 22 is the 20th
    line = "4242 (python (x)) " + " ".join(fields)
    assert started_at(100.0, 10.0, line, 100) == pytest.approx(92.5)
    assert started_at(100.0, 1000.0, line, 100) == 40.0  # older than 60 s: 60 s
    assert started_at(100.0, 1.0, line, 100) == 100.0  # a clock read badly: no age
    assert started_at(100.0, 10.0, "not a stat line", 100) == 100.0


@pytest.mark.usefixtures("no_ending")
@pytest.mark.parametrize("whole", [False, True], ids=["--epochs", "a whole config"])
def test_the_epochs_given_are_the_most_a_budget_trains(easy, tmp_path, monkeypatch, whole):
    """--epochs 2 beside a 100 s budget that fits 12 (test_a_quiet_run_is_not_cut...): the
    budget may end a run sooner than the epochs given, never later; the run trains 2 and
    says it finished."""
    from segtool.train.config import TrainConfig

    machine = Machine(step=1.0)
    machine.install(monkeypatch)
    if whole:
        config = TrainConfig(**SMALL, epochs=2, time_budget=100)
        result = fit(easy, tmp_path / "run", config, clock=0.0)
    else:
        result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, epochs=2, **SMALL)
    assert result.epochs_done == 2 and result.stopped == "finished"
    assert machine.now == 2 * (6 + 2)  # two epochs of 6 steps and a validation pass


def test_epochs_after_never_passes_the_epochs_given():
    """Hand table: 100 s (98 after the 2 % kept for finishing), 25 s spent, epochs of 10 s:
    73 / 10 - 0.3 = 7 more fit."""
    budget = Budget(100, started=0.0, clock=lambda: 25.0)
    assert budget.epochs_after(2, [10.0, 10.0], 5) == 2 + 7
    budget.most_epochs = 4
    assert budget.epochs_after(2, [10.0, 10.0], 5) == 4
    budget.most_epochs = 1  # already past it: never fewer than the epochs done
    assert budget.epochs_after(2, [10.0, 10.0], 5) == 2
