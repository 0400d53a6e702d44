"""The time budget's margins, on an injected clock (never the machine's wall time): checked
within start-up's long phases (a budget spent while the images are measured or decoded is
refused there, in one line, with nothing written), the command's end (the post-processing
chosen after the last epoch) kept out of the epochs so the whole command ends within the
budget, re-planning that does not count epoch 1's warm-up against the others, a summary that
names the first plan shown when the run ends short of it, and a small dataset decoded without
starting workers."""

from __future__ import annotations

import re

import pytest

from segtool.core.errors import SegtoolError
from segtool.train.budget import FINISH_SHARE, Budget
from segtool.train.loop import fit
from segtool.train.pacing import ENDING_PASSES
from tests.synthetic import make_dataset
from tests.test_budget import SMALL, Machine
from tests.test_budget_phases import Planned, Varying, _nothing_written, slow_rebuild


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


class Shown(Planned):
    """Records the phase lines shown too (the first fit says the epochs that fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def phase(self, text: str) -> None:
        self.lines.append(text)


def _slowed(monkeypatch, module, name: str, machine: Machine, seconds: float) -> list:
    """`module.name` (a per-item function) made to take `seconds` on the machine's clock;
    the items it was called with, listed."""
    calls, real = [], getattr(module, name)

    def slow(*args):
        calls.append(args)
        machine.now += seconds
        return real(*args)

    monkeypatch.setattr(module, name, slow)
    return calls


def test_a_budget_spent_while_measuring_is_refused_at_that_image(easy, tmp_path, monkeypatch):
    """Start-up took 50 s of 100; measuring each of the 16 pairs takes 10 s (a slow disk, a
    busy machine). After the 5th the clock reads 100 s, past the 98 % a run may use: the
    run is refused there, naming how far measuring got, not after all 16; nothing written."""
    from segtool.train import fingerprint

    machine = Machine()
    machine.now = 50.0
    machine.install(monkeypatch)
    measured = _slowed(monkeypatch, fingerprint, "_measure_pair", machine, 10.0)
    with pytest.raises(SegtoolError) as caught:
        fit(easy, tmp_path / "run", time_budget=100, clock=0.0, **SMALL)
    assert len(measured) == 5 and machine.now == 100.0
    assert str(caught.value).startswith(
        "--time-budget 100s cannot fit one epoch: start-up, up to measuring the images and "
        "masks (5 of 16) took 100.0 s, the whole budget, before the first step"
    )
    assert machine.steps == 0 and _nothing_written(tmp_path / "run")


def test_a_budget_spent_while_decoding_is_refused_in_one_line(easy, tmp_path, monkeypatch):
    """Measuring and checking are quick, but decoding each pair into the decoded cache takes
    10 s from 55 s on: at the 5th (105 s) the budget is spent. The command says so in one
    line naming the phase, without a traceback, and leaves no run folder (nor one being
    built beside it)."""
    from segtool.cli import train_progress
    from segtool.train import decoded
    from tests.cli import invoke

    machine = Machine()
    machine.now = 55.0
    machine.install(monkeypatch)
    monkeypatch.setattr(train_progress, "process_start", lambda: 0.0)
    decodes = _slowed(monkeypatch, decoded, "_decode", machine, 10.0)
    result = invoke(["train", str(easy), "--out", str(tmp_path / "run"), "--time-budget", "100s",
                     "--encoder", "resnet18", "--workers", "0", "--batch-size", "2",
                     "--size", "32", "--decoded", "ram"])  # fmt: skip
    assert result.exit_code == 1 and result.exception is None
    errors = [line for line in result.stderr.splitlines() if "cannot fit" in line]
    assert len(errors) == 1 and "up to decoding the images (5 of 16) took 105.0 s" in errors[0]
    assert "Traceback" not in result.output
    assert len(decodes) == 5 and machine.steps == 0
    assert _nothing_written(tmp_path / "run")


def test_the_command_ends_within_the_budget_post_processing_included(easy, tmp_path, monkeypatch):
    """Steps of 1 s, validation passes of 2 s, and choosing the post-processing after the
    last epoch takes five passes' time (10 s: the best model loaded, the validation split
    predicted again, each mask written, read back and its components counted). The epochs
    leave room for it (`ENDING_PASSES` of the measured epoch end), so the command, not just
    its training, ends within the 100 s."""
    from segtool.cli import train_progress
    from segtool.evaluate import postprocess
    from tests.cli import invoke

    machine = Machine(step=1.0)
    machine.install(monkeypatch)
    monkeypatch.setattr(train_progress, "process_start", lambda: 0.0)
    ended = []
    real = postprocess.choose_postprocessing

    def choose(*args, **kwargs):
        ended.append(machine.now)  # the training's end
        machine.now += 10.0
        return real(*args, **kwargs)

    monkeypatch.setattr(postprocess, "choose_postprocessing", choose)
    result = invoke(["train", str(easy), "--out", str(tmp_path / "run"), "--time-budget", "100s",
                     "--encoder", "resnet18", "--workers", "0", "--batch-size", "2",
                     "--size", "32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(ended) == 1 and machine.now <= 100.0
    # Kept for the end: six passes of the 2 s epoch end and 2 % of the budget, 14 s; an
    # epoch (6 steps and a pass) takes 8 s, so training ends between 100 - 14 - 8 and 86 s.
    reserve = ENDING_PASSES * 2.0 + FINISH_SHARE * 100
    assert reserve == 14.0 and 100 - reserve - 8 <= ended[0] <= 100 - reserve


def test_re_planning_leaves_out_epoch_1s_warm_up_and_keeps_the_reserve():
    """Epoch 1 took 44 s (it timed the first steps at a larger input and started again),
    the next ones 11 s; 50 s spent of 100. The epochs that fit the 48 s left (98 % of the
    budget) come from the 11 s epochs, not the 22 s mean that epoch 1 drags up; 11 s kept
    for the command's end leaves 37 s."""
    budget = Budget(100.0, started=0.0, clock=lambda: 50.0)
    assert budget.epochs_after(3, [44.0, 11.0, 11.0], 13) == 3 + round(48 / 11 - 0.3) == 7
    assert budget.epochs_after(3, [44.0, 11.0, 11.0], 13, reserve=11.0) == 3 + 3
    # A slower last epoch (the machine got busier) still decides.
    assert budget.epochs_after(3, [44.0, 11.0, 16.0], 13) == 3 + round(48 / 16 - 0.3)
    # After epoch 1 alone, it is all there is.
    assert budget.epochs_after(1, [20.0], 13) == 1 + round(48 / 20 - 0.3)


def test_fitting_the_plan_keeps_the_commands_end_out_of_the_epochs():
    """The first fit, from the timed steps, counts the reserve for the command's end with
    the time already spent: 20 s spent, 2 s of finishing share and 18 s kept leave 60 s of
    a 100 s budget for epochs of 10 steps of 1 s and a 2 s pass: 4 of them (0.3 s each of
    overhead), where 6 would fit without the reserve."""
    from segtool.train.fingerprint import Fingerprint
    from segtool.train.plan import Plan

    def fitted(reserve: float) -> int:
        fp = Fingerprint(40, (64, 64), (64, 64), 3, [])
        plan = Plan()
        plan.set("epochs", 30, "planned")
        budget = Budget(100.0, started=0.0, plan=plan, fingerprint=fp, clock=lambda: 20.0)
        return budget.fit_plan(1.0, 10, 2.0, 1, reserve).options()["epochs"]

    assert fitted(18.0) == int((100 - 20 - 2 - 18) // 12.3) == 4
    assert fitted(0.0) == int((100 - 20 - 2) // 12.3) == 6


def test_a_run_that_ends_short_of_its_first_plan_says_so(easy, tmp_path, monkeypatch):
    """The first steps (1 s each) fit a plan, shown to the user; then one step takes 30 s
    (load arriving for a moment), so the plan made after epoch 1 is small; the quick epochs
    that follow grow it back, but not to the first plan. The run ends short of the plan the
    user saw, and says "stopped at the time budget after N of M planned epochs" with M that
    first plan, never "(finished)"."""
    from segtool.cli.train_progress import how_it_ended

    machine = Varying(lambda k: 30.0 if k == 6 else 1.0)
    machine.install(monkeypatch)
    planned = Shown()
    result = fit(easy, tmp_path / "run", time_budget=100, clock=0.0, reporter=planned, **SMALL)
    fits = [re.search(r"(\d+) epoch\(s\) fit the", line) for line in planned.lines]
    (first,) = [int(found[1]) for found in fits if found]
    assert planned.plans[1] < result.epochs_done  # re-planned down after epoch 1, then up
    assert machine.now <= 100.0
    assert result.epochs_done < first == result.planned_epochs
    assert result.stopped == "time budget"
    assert how_it_ended(result).startswith(
        f"stopped at the time budget after {result.epochs_done} of {first} planned epochs"
    )


def test_a_small_dataset_decodes_in_this_process(tmp_path, monkeypatch):
    """50 pairs of 48 px (under 1 MB decoded, more than `MIN_PARALLEL` pairs): starting the
    decoding workers, each loading torch, would cost more than decoding them here; on a busy
    machine, tens of seconds of a time budget."""
    from segtool.train import loaders
    from segtool.train.build import load_data
    from segtool.train.config import TrainConfig
    from segtool.train.decoded import MIN_PARALLEL
    from segtool.train.distributed import Dist
    from segtool.train.planning import dataset_classes

    data = make_dataset(tmp_path / "ds", n=50)
    jobs, real = [], loaders.decode_pairs

    def spy(*args, **kwargs):
        jobs.append(kwargs.get("jobs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders, "decode_pairs", spy)
    config = TrainConfig(**SMALL, decoded="ram")
    class_map = dataset_classes(data)
    training = load_data(data, tmp_path / "run", config, class_map, False)
    assert len(training.train) + len(training.val) == 50 > MIN_PARALLEL
    cache = loaders.decoded_cache(config, class_map, training, tmp_path / "cache", Dist())
    assert jobs == [1] and cache is not None and len(cache.items) == 50


def test_epoch_1_restarted_at_a_smaller_input_is_timed_from_its_restart(tmp_path, monkeypatch):
    """Start-up took 80 s of 100; the first steps at the planned 96 px fit too few epochs, so
    the plan shrinks the input and building the new loaders takes 5 s. Epoch 1 starts again
    at the new size, and its time (what re-planning reads, and metrics.csv shows) is counted
    from there: its 9 steps of 0.24 s and the 2 s validation, not the steps timed at 96 px
    and the new loaders too."""
    from segtool.train.curves import read_metrics
    from tests.test_train import FAST

    data = make_dataset(tmp_path / "ds", n=40, size=96)
    machine, rebuilt = slow_rebuild(monkeypatch, start=80.0, rebuild=5.0)
    result = fit(data, tmp_path / "run", time_budget=100, clock=0.0, **{**FAST, "batch_size": 4})
    assert len(rebuilt) == 1 and result.epochs_done >= 1 and machine.now <= 100.0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert float(rows[0]["seconds"]) == pytest.approx(9 * 0.24 + 2.0)
