"""`Trainer`: one training run, read as named hooks (as nnU-Net's ``nnUNetTrainer``).

    run_training
        on_train_start    data, model, restore (--resume), records
        for each epoch
            on_epoch_start    seed the epoch's order and augmentation
            train_epoch       `train_step` for each batch, each asked for first
                              (`before_step`: fit the budget from the first steps, save
                              last.pt at step intervals, cut the epoch when the budget ends,
                              refuse a budget spent before epoch 1 could end; the budget
                              hooks are in `segtool.train.budgeted`)
            validate          counts over the validation split, summed over processes
                              (every `val_every` epochs and after the last: `validates`)
            on_epoch_end      re-fit the budget, record, save, report; True stops early
        on_train_end      thresholds (multi-label), the result

The trainer owns the config (`TrainConfig`, replaced, never changed in place, when the budget
re-fits the epochs), the `Run` it computes with and the `Progress`; the run folder's files go
through `RunFolder`. A variant overrides a hook.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from segtool.core.parallel import ProgressFn
from segtool.sources.volume_folder import is_volume_folder
from segtool.train.budget import Budget
from segtool.train.budgeted import BudgetHooks, Refitted
from segtool.train.build import Run, build_run, load_data, run_facts
from segtool.train.checkpoint import run_state, set_rng_state
from segtool.train.distributed import Dist, stop, sum_validation
from segtool.train.pacing import Paced, Pacer
from segtool.train.runfolder import check_room
from segtool.train.runstate import FitResult, Progress, Setup, epoch_row
from segtool.train.saving import Saver
from segtool.train.schedule import warmup_steps
from segtool.train.steps import (
    NonFiniteLoss,
    Reporter,
    Tally,
    scores,
    train_one_epoch,
    train_step,
    validate,
)
from segtool.train.thresholds import tune_best_model
from segtool.train.volume_data import load_volume_data, sum_cases, volume_scores


class Trainer(BudgetHooks):
    """One run: `run_training` calls the hooks in order (see the module's docstring)."""

    def __init__(self, setup: Setup, reporter: Reporter, dist: Dist, budget: Budget) -> None:
        self.setup, self.reporter, self.dist, self.budget = setup, reporter, dist, budget
        self.config = setup.config
        self.class_map = setup.class_map
        self.folder = setup.folder
        self.progress = Progress()
        self.saver = Saver(self.folder)
        self.data: Any = None
        self.run: Run | None = None
        self.pacer = Pacer(budget.clock)
        self.planned_epochs = self.config.epochs
        self.cut: tuple[int, int] | None = None
        self.saved = (0, 0)  #: what last.pt holds: epochs done, and steps of the next one
        self.writing = dist.main  #: False for --plan-only, which writes nothing

    # The loop ---------------------------------------------------------------------------
    def run_training(self) -> FitResult:
        """Train from the first (or the resumed) epoch to the last, or an early stop."""
        self.on_train_start()
        stopped, epoch = "finished", self.progress.start_epoch - 1
        try:
            while epoch < self.config.epochs and self.cut is None:
                epoch += 1
                self.on_epoch_start(epoch)
                train_loss = self.train_epoch(epoch)
                if train_loss is None:  # the budget ended before this epoch's first step:
                    epoch, self.cut = epoch - 1, None  # the run ends whole after the one before
                    stopped = "time budget"
                    break
                validation = self.validate() if self.validates(epoch) else None
                if self.on_epoch_end(epoch, train_loss, validation):
                    stopped = "early stop"
                    break
        except KeyboardInterrupt:
            # last.pt holds the last complete step interval (`saved`), within epoch 1 too.
            stopped, epoch = "interrupted", self.saved[0]
        finally:
            self.run.loaders.close()  # the workers persist across epochs, not past the run
            stop(self.dist)
            self.saver.finish()  # nothing reads or moves the run folder while it is written
        if stopped == "finished" and (self.cut or epoch < self.planned_epochs):
            stopped = "time budget"
        return self.on_train_end(stopped, epoch)

    # Hooks ------------------------------------------------------------------------------
    def build(self, on_progress: ProgressFn | None = None) -> Run:
        """The data (checked, split) and what the epochs compute with; nothing is written
        but a volume folder's slice cache. `on_progress` is called as each pair is checked
        and decoded (the budget's check within start-up)."""
        setup, config = self.setup, self.config
        if is_volume_folder(setup.dataset):
            self.data = load_volume_data(
                setup.dataset, self.folder.path, config, setup.state is not None, self.dist,
                setup.regions,
            )  # fmt: skip
        else:
            self.data = load_data(setup.dataset, self.folder.path, config, self.class_map,
                                  setup.state is not None, setup.regions, on_progress)  # fmt: skip
        self.run = build_run(config, self.class_map, self.data, self.dist, on_progress)
        return self.run

    def on_train_start(self) -> None:
        """Build, restore ``last.pt`` on --resume, fit a new planned run to its budget, show
        the plan, then write the run's records (after checking the disk has room for its
        checkpoints)."""
        self.budget.check_start("start-up (loading, measuring the data)")
        run = self.build(self.budget.on_progress)
        self.budget.check_start("start-up (loading, measuring and reading the data)")
        if self.setup.state is not None:
            self.restore(self.setup.state)
        self.planned_epochs = self.config.epochs
        if self.setup.plan is not None:
            self.reporter.plan(self.budget.shown(self.setup.plan["choices"]))
        if self.dist.main:
            check_room(self.folder.path, run.learner.model, self.setup.out)
            self.write_records()
        self.reporter.start(
            {
                "device": str(run.hardware.device),
                "amp": run.hardware.amp_dtype,
                "train": len(self.data.train),
                "val": len(self.data.val),
                "epochs": self.config.epochs,
                "start_epoch": self.progress.start_epoch,
                "workers": run.hardware.workers,
                "mode": run.mode,
                "time_budget": self.config.time_budget,
                "notes": getattr(self.data, "notes", []),
            }
        )
        if self.budget.to_fit:
            self.reporter.phase(
                f"timing the first steps (they train) to fit the epochs to the "
                f"{self.budget.seconds:g}s budget, {self.budget.spent():.0f}s of it spent"
            )

    def on_epoch_start(self, epoch: int) -> None:
        """Seed the epoch, note its start and learning rate, and report it."""
        self._seed_epoch(epoch)
        self.epoch_started = self.budget.clock()
        self.epoch_lr = self.run.learner.optimizer.param_groups[0]["lr"]
        within = self.progress.within if epoch == self.progress.start_epoch else None
        self.tally = Tally.start(self.run.hardware.device, within)
        self.first_step = self.tally.steps
        if within is not None:
            self.epoch_lr = float(within.get("lr", self.epoch_lr))
        self.reporter.epoch_start(epoch, self.config.epochs, len(self.run.loaders.train))

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimiser step on `batch`; the loss, still on the device."""
        return train_step(self.run, batch, self.config.clip_grad)

    def train_epoch(self, epoch: int) -> float | None:
        """`train_step` over the epoch's batches (from the step last.pt saved, when resuming
        within it), each asked for first (`before_step`); the mean loss, or None when the
        budget ended before the first. A NaN loss stops the run naming the checkpoint kept."""
        try:
            while True:
                batches = Paced(self.run.loaders, self.tally.steps,
                                partial(self.before_step, epoch))  # fmt: skip
                try:
                    loss = train_one_epoch(self.run, batches, self.train_step,
                                           reporter=self.reporter, tally=self.tally)  # fmt: skip
                except Refitted:  # a smaller input fits the budget: epoch 1 starts again
                    self._seed_epoch(epoch)
                    self.tally = Tally.start(self.run.hardware.device)
                    self.epoch_started = self.budget.clock()  # its time from here
                    continue
                self.validation_started = self.pacer.mark()
                self.last_step(self.tally.steps, ending=True)  # a budget spent: refused here
                return None if self.tally.steps == self.first_step else loss
        except NonFiniteLoss as exc:
            last = self.setup.out / self.folder.last_checkpoint.relative_to(self.folder.path)
            saved = self.saver.finish() or self.folder.last_checkpoint.is_file()
            kept = f"the last good checkpoint is {last}" if saved else "no checkpoint was written"
            raise NonFiniteLoss(
                f"epoch {epoch}: {exc}; training stopped and {kept}; lower --lr (now "
                f"{self.config.lr}) or keep --clip-grad on"
            ) from None

    def validate(self, batches: int | None = None) -> tuple[float, int, dict[str, Any]]:
        """Validation loss and scores, summed over processes (volumes: each case scored in
        3-D, then the mean over cases); only the first `batches` when given.

        Returns:
            (summed loss, images counted, `scores`).
        """
        run, class_map = self.run, self.class_map
        loader = run.loaders.val
        if batches is not None:
            loader = list(itertools.islice(loader, batches))
        per_case: dict | None = {} if run.loaders.val_cases is not None else None
        loss_sum, counts, n = validate(
            run.learner.model, loader, run.learner.loss_fn, class_map, run.hardware.device,
            amp_dtype=run.hardware.amp_dtype, per_case=per_case,
        )  # fmt: skip
        counts, loss_sum, n = sum_validation(counts, loss_sum, n, run.hardware.device, self.dist)
        if per_case is None:
            return loss_sum, n, scores(counts, class_map)
        cases = sum_cases(per_case, run.loaders.val_cases, class_map.num_classes,
                          run.hardware.device, self.dist)  # fmt: skip
        return loss_sum, n, volume_scores(cases, class_map)

    def validates(self, epoch: int) -> bool:
        """Whether `epoch` validates: every `val_every` epochs (counted from the run's first,
        so a resumed run keeps the cycle), the last epoch and one the budget cut short."""
        return epoch % self.config.val_every == 0 or epoch >= self.config.epochs or bool(self.cut)

    def on_epoch_end(
        self, epoch: int, train_loss: float, validation: tuple[float, int, dict[str, Any]] | None
    ) -> bool:
        """Re-fit the epochs to the budget, record the epoch (`validation` None: it did not
        validate; validated now if the budget made it the last), save and report.

        Returns:
            True when the run stops early (``patience`` validations without a better Dice).
        """
        measured = self.budget.clock() - self.validation_started if validation else None
        if self.budget.to_fit:  # an epoch of fewer steps than timing wanted
            step = self.budget.first_step_time(list(self.pacer.times), final=True)
            self._fit_budget(step, measured)
        spent = [*self.progress.epoch_seconds, self.budget.clock() - self.epoch_started]
        epochs = self.budget.epochs_after(epoch, spent, self.config.epochs, self._ending(measured))
        if epochs != self.config.epochs and self.cut is None:
            self.set_epochs(epochs)
            # The epochs promised: the first plan shown, or a later one that grew past it.
            self.planned_epochs = max(self.planned_epochs, epochs)
            if self.writing:
                self.write_records()
        if validation is None and self.validates(epoch):  # now the last epoch
            validation = self.validate()
        seconds = self.budget.clock() - self.epoch_started
        row = epoch_row(epoch, train_loss, validation, self.epoch_lr, seconds)
        improved = self.progress.record(row, validation[2]["per_class"] if validation else None)
        if self.writing:
            self.save(improved)
        self.progress.epoch_seconds.append(self.budget.clock() - self.epoch_started)
        self.pacer.ended_epoch(self.validation_started, validated=validation is not None)
        self.reporter.epoch_end(row)
        patience = self.config.patience
        return patience is not None and self.progress.bad_epochs >= patience

    def on_train_end(self, stopped: str, epoch: int) -> FitResult:
        """Tune a multi-label run's thresholds on its best model; how the run ended."""
        progress, thresholds = self.progress, None
        if self.dist.main and self.class_map.multilabel:
            finished = progress.best_epoch > 0 and stopped != "interrupted"
            thresholds = tune_best_model(
                self.folder, self.config, self.class_map, self.data, self.run, finished
            )
        best = (progress.best_epoch, progress.best_dice, progress.best_per_class)
        return FitResult(self.setup.out, *best, epoch, stopped, self.dist.main, thresholds,
                         planned_epochs=max(self.planned_epochs, self.config.epochs), cut=self.cut,
                         saved_steps=self.saved[1] if stopped == "interrupted" else 0)  # fmt: skip

    # What the hooks share ---------------------------------------------------------------
    def _ending(self, closing: float | None) -> float:
        """Seconds the command takes after the last epoch's end (`Pacer.ending_time`, from
        the `closing` just measured where this epoch validated; none before a step)."""
        step = self.pacer.step_time()
        return self.pacer.ending_time(step, len(self.run.loaders.val), closing) if step else 0.0

    def set_epochs(self, epochs: int) -> None:
        """Run `epochs` epochs in all; the schedule decays smoothly to the new end."""
        self.config = replace(self.config, epochs=epochs)
        self.run.learner.retarget(len(self.run.loaders.train) * epochs)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue where ``last.pt`` stopped (weights, optimiser, schedule, scaler, counters
        and random states, and the metrics rows before it).

        When the run's length changed (``--epochs``), the schedule continues smoothly from
        the current rate to the new end, or, with ``warm_restart``, warms up to the peak
        again."""
        learner, steps = self.run.learner, len(self.run.loaders.train)
        learner.model.load_state_dict(state["model"])
        learner.load_optimizer(state["optimizer"])
        learner.scheduler.load_state_dict(state["scheduler"])
        total = steps * self.config.epochs
        if self.config.warm_restart:
            step = learner.scheduler.last_epoch
            learner.restart(total, warmup_steps(total - step, steps, self.config.warmup_epochs))
        else:
            learner.retarget(total)
        learner.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.restored(state, self.folder.metrics())
        self.saved = (int(state["epoch"]), int((self.progress.within or {}).get("steps", 0)))
        set_rng_state(state["rng"])

    def save(self, improved: bool) -> None:
        """The best model (when this epoch improved), last.pt, metrics.csv and curves.png,
        snapshotted now and written in the background (`Saver`)."""
        epoch = self.progress.rows[-1]["epoch"]
        self._checkpoint(epoch, None, improved)
        self.saved = (epoch, 0)

    def _checkpoint(self, epoch: int, within: dict[str, Any] | None, best: bool = False) -> None:
        """last.pt after `epoch` epochs, and `within` the next one (its tally) if given, with
        metrics.csv (and the best model when `best`), written in the background."""
        config = self.config.to_json()
        state = run_state(self.run.learner, self.progress, self.class_map.names, config, epoch,
                          within)  # fmt: skip
        self.saver.save(self.run.learner.model, state, self.progress.rows, best)
        self.pacer.saved()

    def write_records(self) -> None:
        """classes.json, split.json and config.json (again when the budget re-fits)."""
        facts = run_facts(self.setup.dataset, self.config, self.class_map, self.data,
                          self.run, self.dist.world)  # fmt: skip
        self.folder.write_records(self.config, self.class_map, self.data.split, facts,
                                  self.setup.plan)  # fmt: skip

    def _seed_epoch(self, epoch: int) -> None:
        """Order and augmentation depend on (seed, epoch) alone (`loaders.epoch_seed`), so a
        resumed run repeats exactly what an uninterrupted one would have done."""
        self.run.loaders.seed_epoch(epoch)
