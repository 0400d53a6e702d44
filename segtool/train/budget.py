"""The time budget (``--time-budget``): how many epochs fit, decided from timed steps of the
run itself and decided again after every epoch from the epochs' measured times.

The `Trainer` asks; this module answers with numbers and never touches the model, the
optimiser or its schedule (the trainer re-targets its own schedule when the answer changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from segtool.train.plan import Timing, fit_budget

if TYPE_CHECKING:
    from segtool.train.fingerprint import Fingerprint
    from segtool.train.plan import Plan

#: Steps timed at the start of a budgeted run: the first pay for allocation and caches and
#: are not counted; the median of the rest is the step time.
WARM_STEPS, TIMED_STEPS = 2, 5
#: Validation batches timed to estimate a whole validation pass.
TIMED_VAL_BATCHES = 2
#: A run planned to end at the budget aims this share of an epoch early (saving the last).
EPOCH_MARGIN = 0.3


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

    @property
    def to_fit(self) -> bool:
        """Whether the run's first steps must be timed to fit the plan to the budget."""
        return self.seconds is not None and self.plan is not None

    def spent(self) -> float:
        """Seconds since the user started the run."""
        return self.clock() - self.started

    def fit_plan(self, step: float, steps_per_epoch: int, validation: float) -> Plan:
        """Fit the plan to the budget from the timed steps (once, at the start).

        Args:
            step: seconds of one training step (the median of the timed ones).
            steps_per_epoch: training steps in an epoch.
            validation: seconds of one validation pass.

        Returns:
            The plan, fitted: its epochs (and a smaller input, where it must).

        Raises:
            ValueError: there is no plan to fit (`to_fit` is False).
        """
        plan, fp = self.plan, self.fingerprint
        if plan is None or fp is None or self.seconds is None:
            raise ValueError("no planned run to fit to a time budget")
        fit_budget(plan, fp, Timing(step, steps_per_epoch, validation, self.spent()), self.seconds)
        self.plan = None
        return plan

    def epochs_after(self, epoch: int, epoch_seconds: list[float], epochs: int) -> int:
        """The number of epochs that fits the rest of the budget after `epoch`, at the mean
        duration of this invocation's epochs (`epoch_seconds`); `epochs` without a budget.

        Never fewer than `epoch` (the epochs already done).
        """
        if self.seconds is None or not epoch_seconds:
            return epochs
        left = self.seconds - self.spent()
        mean = sum(epoch_seconds) / len(epoch_seconds)
        return max(epoch + round(left / mean - EPOCH_MARGIN), epoch)
