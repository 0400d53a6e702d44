"""The `Trainer`'s time-budget hooks (a mixin): asked before every step and at the end of an
epoch's steps, they fit a new planned run to its budget once its first steps are timed, cut an
epoch that would overrun, compress the schedule to end where the budget does, save ``last.pt``
at step intervals, and refuse a budget that start-up and the first steps have spent.

The numbers come from `Budget` and `Pacer`; these hooks apply them to the trainer's config,
loaders and schedule. A budget is checked at each phase's end: after start-up
(`Budget.check_start`), before each step, and when epoch 1's steps end; while the first steps
are still timed, or when this invocation has timed one step and ended no epoch, a budget in
which the next step (or the epoch's end), validating and saving no longer fit is refused right
there (`Budget.refuse`: one line naming the budget that would fit), never trained past.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from segtool.train.build import build_loaders
from segtool.train.epoch_length import VALIDATION_PER_STEP
from segtool.train.pacing import Paced
from segtool.train.steps import train_one_epoch

if TYPE_CHECKING:
    from segtool.core.classes import ClassMap
    from segtool.train.budget import Budget
    from segtool.train.build import Run
    from segtool.train.config import TrainConfig
    from segtool.train.distributed import Dist
    from segtool.train.pacing import Pacer
    from segtool.train.runstate import Progress, Setup
    from segtool.train.steps import Reporter, Tally


class Refitted(Exception):
    """The budget's first fit changed the input size: epoch 1 starts again at it."""


class BudgetHooks:
    """What `Trainer` asks of its time budget; the attributes are the trainer's own."""

    budget: Budget
    class_map: ClassMap
    data: Any
    pacer: Pacer
    run: Run
    config: TrainConfig
    dist: Dist
    setup: Setup
    progress: Progress
    reporter: Reporter
    tally: Tally
    first_step: int
    planned_epochs: int
    cut: tuple[int, int] | None
    saved: tuple[int, int]
    writing: bool
    epoch_lr: float

    def before_step(self, epoch: int, done: int) -> bool:
        """Asked before each training step, `done` steps of the epoch done: fit a new planned
        run to its budget once its first steps are timed; cut the epoch (False) when the next
        step would not leave the time to validate and save, else compress the schedule to end
        at its floor on the last step that fits; save last.pt when a step interval is due.

        Raises:
            SegtoolError: a budget spent while the first steps are timed (`last_step`).
            Refitted: the budget's fit chose a smaller input.
        """
        pacer, learner, steps = self.pacer, self.run.learner, len(self.run.loaders.train)
        now = pacer.mark()
        last = self.last_step(done, ending=False)
        if last is not None and last < learner.scheduler.last_epoch:
            self.cut = (done, steps)
            return False
        if self.budget.to_fit:
            timed = self.budget.first_step_time(list(pacer.times))
            if timed is not None and self._fit_budget(timed, None):
                raise Refitted
        elif last is not None:
            learner.retarget(min(last, steps * self.config.epochs))
        if self.writing and done > self.first_step and pacer.save_due(now):
            self._checkpoint(epoch - 1, {**self.tally.state(), "lr": self.epoch_lr})
            self.saved = (epoch - 1, done)
        return True

    def last_step(self, done: int, *, ending: bool) -> int | None:
        """The last step of the run that fits the budget at the current step time
        (`Budget.last_step`); None without a budget, a step time, or under torchrun (each
        process would decide on its own clock). When not even the next step (`ending` the
        epoch's steps: its end) fits, validating and saving included, while the first steps
        are timed or when this invocation has ended no epoch and trained at most one step of
        this one (`done` of the epoch done; none after a refit to a smaller input, whose new
        loaders took time), the run is refused there: it never ends without an epoch. The
        time the command takes after the last epoch (`Pacer.ending_time`) is kept back from
        the steps, but does not refuse a budget: guessed from the first, warm-up steps, it
        would refuse budgets whose epoch fits.

        Raises:
            SegtoolError: the budget is refused (`Budget.refuse`).
        """
        step = self.pacer.step_time()
        if self.dist.world > 1 or step is None:
            return None
        val_batches = len(self.run.loaders.val)
        closing = self.pacer.closing_time(step, val_batches)
        current = self.run.learner.scheduler.last_epoch
        fits = self.budget.last_step(current, step, closing)
        first = done <= self.first_step + 1 and not self.progress.epoch_seconds
        if fits is not None and fits < current - ending and (self.budget.to_fit or first):
            self.budget.refuse(step, done - self.first_step, len(self.run.loaders.train), closing)
        return self.budget.last_step(
            current, step, closing + self.pacer.ending_time(step, val_batches, closing)
        )

    def fit_budget(self) -> None:
        """``--plan-only``: train epoch 1's first steps until they are timed and the plan is
        fitted to the budget, writing nothing."""
        self.writing = False
        self.on_epoch_start(1)
        batches = Paced(self.run.loaders, 0,
                        lambda done: self.before_step(1, done) and self.budget.to_fit)  # fmt: skip
        try:
            train_one_epoch(self.run, batches, self.train_step, tally=self.tally)
        except Refitted:
            return
        self.pacer.mark()
        if self.budget.to_fit:  # an epoch of fewer steps than timing wanted
            self._fit_budget(self.budget.first_step_time(list(self.pacer.times), final=True), None)

    def _fit_budget(self, step: float | None, validation: float | None) -> bool:
        """Fit the plan to the budget from the first steps' time and a validation pass's
        (None: guessed from the step): the epochs, and a smaller input where too few fit
        (then the data loaders are built again).

        Returns:
            Whether the input changed (epoch 1 starts again at it).
        """
        run, val_batches = self.run, len(self.run.loaders.val)
        step = step or 0.0
        reserve = self.pacer.ending_time(step, val_batches, validation)
        if validation is None:
            validation = val_batches * step * VALIDATION_PER_STEP
        plan = self.budget.fit_plan(step, len(run.loaders.train), validation, val_batches, reserve)
        before, self.config = self.config, replace(self.config, **plan.options())
        if self.setup.plan is not None:
            self.setup.plan = {**self.setup.plan, "choices": plan.to_json()}
        changed = (self.config.size, self.config.crop, self.config.resize) != (
            before.size, before.crop, before.resize
        )  # fmt: skip
        if changed:
            run.loaders.close()
            run.loaders = build_loaders(
                self.config, self.class_map, self.data, self.dist, run.hardware
            )
            self.pacer.restart()
        run.learner.retarget(len(run.loaders.train) * self.config.epochs)
        self.planned_epochs = self.config.epochs  # the first plan shown: the epochs promised
        if self.writing and self.dist.main:
            self.write_records()
        size = f", input {self.config.size}" if changed else ""
        self.reporter.phase(
            f"{step:.2f}s a step, {len(run.loaders.train)} steps an epoch: "
            f"{self.config.epochs} epoch(s) fit the {self.budget.seconds:g}s budget "
            f"({self.budget.spent():.0f}s spent){size}"
        )
        return changed
