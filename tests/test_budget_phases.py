"""The time budget checked at each phase's end, on an injected clock (never the machine's wall
time): a budget that start-up has (nearly) spent is refused after start-up or at the first
step timed, with one line naming the budget that would fit, never trained or timed past; and
the summary of a run whose plan grew as it went never says "N of M" with N over M."""

from __future__ import annotations

import pytest

from segtool.core.errors import SegtoolError
from segtool.train.config import TrainConfig
from segtool.train.loop import fit
from segtool.train.steps import Reporter
from tests.synthetic import make_dataset
from tests.test_budget import SMALL, Machine, no_ending  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


def _nothing_written(out) -> bool:
    """Neither the run folder nor one being built beside it exists."""
    return not any(p.name.startswith(out.name) for p in out.parent.iterdir())


def slow_rebuild(monkeypatch, start: float, rebuild: float) -> tuple[Machine, list[float]]:
    """A machine of 0.24 s steps whose clock reads `start` as training starts, on which
    building the data loaders again (a refit to a smaller input) takes `rebuild` seconds;
    with the list of the clock's readings at each rebuild."""
    from segtool.train import budgeted

    machine = Machine(step=0.24)
    machine.now = start
    machine.install(monkeypatch)
    rebuilt, build = [], budgeted.build_loaders

    def slow_build(*args, **kwargs):
        rebuilt.append(machine.now)
        machine.now += rebuild
        return build(*args, **kwargs)

    monkeypatch.setattr(budgeted, "build_loaders", slow_build)
    return machine, rebuilt


def test_start_up_at_95_percent_is_refused_at_the_first_step(easy, tmp_path, monkeypatch):
    """Start-up took 95 s of a 100 s budget; the first step takes 1 s. Before the second,
    1 s a step and 2 s to validate and save leave no room (2 % is kept for finishing): the
    run is refused after that one step, before any validation, naming a budget that fits."""
    machine = Machine(step=1.0)
    machine.now = 95.0
    machine.install(monkeypatch)
    with pytest.raises(SegtoolError) as caught:
        fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    message = str(caught.value)
    assert machine.steps == 1 and machine.now == 96.0  # one step, nothing validated
    assert "--time-budget 100s cannot fit one epoch" in message
    assert "the first 1 step(s) took 96.0 s" in message
    # 5 more steps of 1 s and 2 s to close: (96 + 7) / 0.98 = 105.1 s, with a fifth more.
    assert "give --time-budget 126s or more" in message
    assert _nothing_written(tmp_path / "run")


def test_start_up_that_spent_the_budget_is_refused_before_any_step(easy, tmp_path, monkeypatch):
    machine = Machine(step=1.0)
    machine.now = 99.0  # past the 98 % a run may use
    machine.install(monkeypatch)
    with pytest.raises(
        SegtoolError,
        match=r"cannot fit one epoch: start-up, up to measuring the images and masks \(0 of "
        r"16\) took 99\.0 s, the whole budget, before",
    ):
        fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    assert machine.steps == 0 and machine.now == 99.0
    assert _nothing_written(tmp_path / "run")


def test_a_run_not_planned_is_refused_at_its_first_step_too(easy, tmp_path, monkeypatch):
    """The options given whole (nothing planned, as volumes and --resume are): the budget is
    not fitted, but a first step that shows the epoch cannot end in time stops the run there
    instead of training a one-step epoch past the budget."""
    machine = Machine(step=1.0)
    machine.now = 95.0
    machine.install(monkeypatch)
    config = TrainConfig(**SMALL, epochs=3, time_budget=100)
    with pytest.raises(SegtoolError, match="cannot fit one epoch"):
        fit(easy, tmp_path / "run", config, clock=0.0)
    assert machine.steps == 1 and machine.now == 96.0


def test_an_epoch_of_one_step_is_refused_before_its_validation(easy, tmp_path, monkeypatch):
    """One step an epoch (a batch of all 12 training images) of 30 s on a busy machine, 60 s
    of start-up: after the step (90 s) validating and saving (about 45 s at that pace) no
    longer fit; the run is refused there, not after a validation pass."""
    machine = Machine(step=30.0)
    machine.now = 60.0
    machine.install(monkeypatch)
    with pytest.raises(SegtoolError, match="cannot fit one epoch"):
        fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **{**SMALL, "batch_size": 12})
    assert machine.steps == 1 and machine.now == 90.0


def test_cli_refuses_a_spent_budget_in_one_line(easy, tmp_path, monkeypatch):
    from segtool.cli import train_progress
    from tests.cli import invoke

    machine = Machine(step=1.0)
    machine.now = 95.0
    machine.install(monkeypatch)
    monkeypatch.setattr(train_progress, "process_start", lambda: 0.0)
    result = invoke(["train", str(easy), "--out", str(tmp_path / "run"), "--time-budget", "100s",
                     "--encoder", "resnet18", "--workers", "0", "--batch-size", "2",
                     "--size", "32"])  # fmt: skip
    assert result.exit_code == 1 and result.exception is None
    errors = [line for line in result.stderr.splitlines() if "cannot fit" in line]
    assert len(errors) == 1 and "give --time-budget 126s or more" in errors[0]
    assert "Traceback" not in result.output and machine.steps == 1


class Varying(Machine):
    """A `Machine` whose k-th training step takes `seconds(k)`."""

    def __init__(self, seconds) -> None:
        self.seconds = seconds
        super().__init__()

    @property
    def step(self) -> float:
        return self.seconds(self.steps)

    @step.setter
    def step(self, value: float) -> None:
        pass  # the steps' times come from `seconds`


class Planned(Reporter):
    """Records the epochs planned as each epoch starts."""

    def __init__(self) -> None:
        self.plans: list[int] = []

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.plans.append(epochs)


@pytest.mark.usefixtures("no_ending")
def test_a_plan_that_grew_is_said_as_the_current_plan(easy, tmp_path, monkeypatch):
    """Epoch 1's steps take 3 s (a busy start), the rest 1 s: the first steps fit 4 epochs;
    the plan made after epoch 1 (20 s) is 5, and grows as the quicker epochs are measured
    (epoch 1, with its warm-up, left out of their mean): 10, which the run trains whole. The
    summary names the plan the run ended under: "finished", never "after N of M" with N
    over M."""
    from segtool.cli.train_progress import how_it_ended

    machine = Varying(lambda k: 3.0 if k <= 6 else 1.0)
    machine.install(monkeypatch)
    planned = Planned()
    result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, reporter=planned, **SMALL)
    assert machine.now == 20 + 9 * 8 <= 100.0
    # After epoch 2: 70 s left (98 - 28) at 8 s an epoch: 2 + round(8.75 - 0.3) = 10.
    assert planned.plans[1] == 1 + round(78 / 20 - 0.3) < planned.plans[-1] == 10
    assert result.stopped == "finished" and result.cut is None
    assert (result.epochs_done, result.planned_epochs) == (10, 10)
    assert how_it_ended(result) == "finished"


def test_a_budget_that_ends_before_an_epochs_first_step_names_the_last_whole_epoch(
    easy, tmp_path, monkeypatch
):
    """Load arrives between two epochs (the clock jumps to 97 s as epoch 5 starts): not one
    step of epoch 5 fits, so the run ends after 4 whole epochs, and the summary says so
    without an epoch "cut short after 0 steps"."""
    from segtool.cli.train_progress import how_it_ended
    from segtool.train.trainer import Trainer

    machine = Machine(step=1.0)
    machine.install(monkeypatch)
    start = Trainer.on_epoch_start

    def loaded(self, epoch):
        if epoch == 5:
            machine.now = 97.0
        return start(self, epoch)

    monkeypatch.setattr(Trainer, "on_epoch_start", loaded)
    result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    assert machine.steps == 4 * 6 and result.stopped == "time budget"
    assert result.epochs_done == 4 and result.cut is None
    assert how_it_ended(result) == (
        f"stopped at the time budget after 4 of {result.planned_epochs} planned epochs"
    )


def test_a_refit_whose_new_loaders_spend_the_budget_is_refused_never_ended_without_an_epoch(
    tmp_path, monkeypatch
):
    """Start-up took 85 s of 100 (a niced run on a busy machine); the first steps at the
    planned 96 px fit too few epochs, so the plan shrinks the input, and building the new
    loaders takes 11 s more (to 97.7 s: the budget is not yet spent while they decode). One
    step at the new size shows the epoch cannot end in time:
    the run is refused in one line (it once ended with no epoch and no model, and the
    command then failed on the missing model)."""
    from tests.test_train import FAST

    data = make_dataset(tmp_path / "ds", n=40, size=96)
    machine, rebuilt = slow_rebuild(monkeypatch, start=85.0, rebuild=11.0)
    with pytest.raises(SegtoolError, match=r"cannot fit one epoch: start-up and the first 1 step"):
        fit(data, tmp_path / "run", time_budget=100, clock=0.0, **{**FAST, "batch_size": 4})
    assert len(rebuilt) == 1 and machine.now < 100.0
    assert _nothing_written(tmp_path / "run")
