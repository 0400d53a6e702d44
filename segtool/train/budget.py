"""The time budget (``--time-budget``): how many epochs fit, decided from the run's own first
steps (timed as they train, for at most `TIMING_SHARE` of the budget) and decided again after
every epoch from the epochs' measured times; and, before every step, the last step that fits
(`last_step`), so that an epoch much slower than foreseen (load arriving mid-run, a run
started with ``nice``) is cut short in time to be validated and saved within the budget.

The `Trainer` asks; this module answers with numbers and never touches the model, the
optimiser or its schedule (the trainer re-targets its own schedule when the answer changes).
The budget counts from `started`: the moment the user started the command, so start-up,
measuring the dataset and timing the steps are spent from it; it is checked within start-up's
long phases too (`on_progress`, after each image measured, checked or decoded), at their end
(`check_start`) and at the first step timed (`refuse`), so a budget that start-up has (nearly)
spent is refused as soon as it is, naming what would fit, not steps later. What the command
does after the last epoch (`reserve`: the post-processing chosen on the validation split, the
run folder moved into place, the summary) is kept out of the epochs, so the command, not just
its training, ends within the budget.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from segtool.core.errors import SegtoolError
from segtool.train.plan import Timing, fit_budget

if TYPE_CHECKING:
    from segtool.train.choices import Plan
    from segtool.train.fingerprint import Fingerprint

#: Steps timed at the start of a budgeted run: the first pay for allocation and caches and
#: are not counted; the median of the rest is the step time.
WARM_STEPS, TIMED_STEPS = 2, 5
#: The most of the budget that timing the first steps may take: past it, the steps timed so
#: far decide (at least one), and the epochs' own times correct the plan as the run goes.
TIMING_SHARE = 0.05
#: A run planned to end at the budget aims this share of an epoch early (saving the last).
EPOCH_MARGIN = 0.3
#: The share of the budget kept, past the last validation and save, for finishing the run
#: (the run folder moved into place, the summary, the interpreter's exit).
FINISH_SHARE = 0.02


@dataclass
class Budget:
    """A run's time budget: `seconds` from `started` (``time.monotonic()``), or none.

    `plan` and `fingerprint` are set for a new planned run whose epochs (and, if too few fit,
    input size) are still to be fitted to the budget from its first timed steps. `clock`
    reads the time (``time.monotonic``; tests give their own).
    """

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    plan: Plan | None = None
    fingerprint: Fingerprint | None = None
    clock: Callable[[], float] = time.monotonic
    most_epochs: int | None = None  #: the ``--epochs`` the user gave: cut, never exceeded

    @property
    def to_fit(self) -> bool:
        """Whether the run's first steps must be timed to fit the plan to the budget."""
        return self.seconds is not None and self.plan is not None

    def shown(self, choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The plan's choices as shown before training: a planned epoch count that is still
        to be fitted to the budget is shown as such (the fitted number follows once the
        first steps are timed)."""
        if not self.to_fit:
            return choices
        why = f"fitted to the {self.seconds:g}s budget once the first steps are timed"
        return [
            {**c, "value": None, "why": why}
            if c["option"] == "epochs" and c["why"] != "given"
            else c
            for c in choices
        ]

    def spent(self) -> float:
        """Seconds since the user started the run."""
        return self.clock() - self.started

    def fit_plan(
        self,
        step: float,
        steps_per_epoch: int,
        validation: float,
        val_batches: int | None = None,
        reserve: float = 0.0,
    ) -> Plan:
        """Fit the plan to the budget from the timed steps (once, at the start).

        Args:
            step: seconds of one training step (the median of the timed ones).
            steps_per_epoch: training steps in an epoch.
            validation: seconds of one validation pass.
            val_batches: the batches of a validation pass (a short one validates every epoch).
            reserve: seconds the command takes after the last epoch (`Pacer.ending_time`).

        Returns:
            The plan, fitted: its epochs (and a smaller input, where it must).

        Raises:
            ValueError: there is no plan to fit (`to_fit` is False).
        """
        plan, fp = self.plan, self.fingerprint
        if plan is None or fp is None or self.seconds is None:
            raise ValueError("no planned run to fit to a time budget")
        fixed = self.spent() + reserve + FINISH_SHARE * self.seconds
        timing = Timing(step, steps_per_epoch, validation, fixed, val_batches)
        fit_budget(plan, fp, timing, self.seconds)
        self.plan = None
        return plan

    def first_step_time(self, times: list[float], *, final: bool = False) -> float | None:
        """The step time to fit the plan with, from the first steps' `times`: the median of
        those after `WARM_STEPS` once `TIMED_STEPS` are in, or once the steps took
        `TIMING_SHARE` of the budget (or, `final`, the epoch ended), of those there are
        (the warm ones too, where no other was timed); None while more are wanted."""
        timed = times[WARM_STEPS:]
        enough = len(timed) >= TIMED_STEPS or sum(times) >= TIMING_SHARE * (self.seconds or 0)
        if not times or not (enough or final):
            return None
        return statistics.median(timed or times)

    def epochs_after(
        self, epoch: int, epoch_seconds: list[float], epochs: int, reserve: float = 0.0
    ) -> int:
        """The number of epochs that fits the rest of the budget after `epoch`, less the
        `reserve` the command takes after the last epoch and `FINISH_SHARE`, at the duration
        of this invocation's epochs (`epoch_seconds`): their mean, leaving out the first once
        others are measured (it carries the warm-up: the first steps' allocations, the
        loader's first batches), or the last one when it was slower (the machine got busier);
        `epochs` without a budget. Never more than `most_epochs` (the ``--epochs`` the user
        gave: the budget may end the run sooner, never later), never fewer than `epoch` (the
        epochs already done).
        """
        if self.seconds is None or not epoch_seconds:
            return epochs
        left = self.seconds * (1 - FINISH_SHARE) - self.spent() - reserve
        settled = epoch_seconds[1:] or epoch_seconds
        per_epoch = max(sum(settled) / len(settled), epoch_seconds[-1])
        fitted = epoch + round(left / per_epoch - EPOCH_MARGIN)
        if self.most_epochs is not None:
            fitted = min(fitted, self.most_epochs)
        return max(fitted, epoch)

    def last_step(self, step: int, step_seconds: float, closing: float) -> int | None:
        """The last step that fits: `step` is the next one (counted over the run), each takes
        `step_seconds`, and ending the run takes `closing` seconds (validating and saving the
        last epoch, and what the command does after it: `Pacer.ending_time`) and
        `FINISH_SHARE` of the budget.

        Returns:
            Its number (``step - 1`` when not even the next one fits), or None without a
            budget or a step time.
        """
        if self.seconds is None or step_seconds <= 0:
            return None
        left = self.seconds * (1 - FINISH_SHARE) - self.spent() - closing
        return step + math.floor(left / step_seconds) - 1

    def check_start(self, phase: str) -> None:
        """Refuse, once `phase` (start-up, loading the data) has ended, a budget it has spent:
        nothing is left to time a step in, let alone train, validate and save.

        Raises:
            SegtoolError: naming --time-budget, the time spent and what would fit.
        """
        if self.seconds is None:
            return
        spent = self.spent()
        if spent < self.seconds * (1 - FINISH_SHARE):
            return
        raise SegtoolError(
            f"--time-budget {self.seconds:g}s cannot fit one epoch: {phase} took {spent:.1f} s, "
            f"the whole budget, before the first step; give a --time-budget well over "
            f"{math.ceil(spent)}s (the epochs come on top of it), or pass --epochs instead"
        )

    def on_progress(self, phase: str, done: int, total: int) -> None:
        """`check_start` within a long start-up phase (a `ProgressFn`, called as each of its
        `total` items starts and ends): a budget spent while the images are measured,
        checked or decoded is refused there, not once the phase ends.

        Raises:
            SegtoolError: the budget is spent (`check_start`), naming the phase and how far
                it got.
        """
        self.check_start(f"start-up, up to {phase} ({done} of {total})")

    def refuse(self, step: float, done: int, steps_per_epoch: int, closing: float) -> NoReturn:
        """Stop a run whose first `done` steps show that not even the next one, validating
        and saving (`closing`) fit what is left of the budget (`last_step` says so): one line naming the
        time spent, what the rest of an epoch takes and the budget that would fit it.

        Raises:
            SegtoolError: always.
        """
        spent, rest = self.spent(), max(steps_per_epoch - done, 0)
        epoch = step * rest + closing
        need = (spent + epoch) / (1 - FINISH_SHARE)
        more = f"{rest} more step(s) of {step:.2f} s, " if rest else ""
        first = f"start-up and the first {done} step(s)" if done else "start-up and timing"
        raise SegtoolError(
            f"--time-budget {self.seconds:g}s cannot fit one epoch: {first} took "
            f"{spent:.1f} s, and the epoch needs about {epoch:.1f} s more "
            f"({more}validation and saving); give --time-budget {need * 1.2:.0f}s or more, "
            f"or pass --epochs instead"
        )
