"""`Trainer`: one training run, read as named hooks (as nnU-Net's ``nnUNetTrainer``).

    run_training
        on_train_start    data, model, restore (--resume), records; fit the budget
        for each epoch
            on_epoch_start    seed the epoch's order and augmentation
            train_epoch       `train_step` for each batch
            validate          counts over the validation split, summed over processes
            on_epoch_end      record, re-fit the budget, save, report; True stops early
        on_train_end      thresholds (multi-label), the result

The trainer owns the config (`TrainConfig`, replaced, never changed in place, when the budget
re-fits the epochs), the `Run` it computes with and the `Progress`; the run folder's files go
through `RunFolder`. A variant overrides a hook.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from segtool.core.classes import ClassMap
from segtool.core.regions import Regions
from segtool.sources.volume_folder import is_volume_folder
from segtool.train.budget import TIMED_STEPS, TIMED_VAL_BATCHES, WARM_STEPS, Budget
from segtool.train.build import Run, build_loaders, build_run, load_data, run_facts
from segtool.train.checkpoint import load_checkpoint, rng_state, set_rng_state
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist, stop, sum_validation
from segtool.train.runfolder import RunFolder, check_room
from segtool.train.saving import Saver
from segtool.train.schedule import warmup_steps
from segtool.train.steps import (
    NonFiniteLoss,
    Reporter,
    scores,
    train_one_epoch,
    train_step,
    validate,
)
from segtool.train.thresholds import tune_best_model
from segtool.train.volume_data import load_volume_data, sum_cases, volume_scores


@dataclass
class FitResult:
    """How a run ended."""

    run: Path
    best_epoch: int
    best_dice: float
    best_per_class: dict[str, float]
    epochs_done: int
    stopped: str  # "finished", "early stop", "interrupted"
    main_process: bool = True  # False on the other ranks of a torchrun job
    thresholds: dict | None = None  # multi-label runs with tune_thresholds: thresholds.json
    kept: bool = True  # False when an interrupted --overwrite left the previous run in place


@dataclass
class Progress:
    """What the epochs so far decided; ``last.pt`` carries it across --resume."""

    start_epoch: int = 1
    best_dice: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_per_class: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  #: this invocation's epochs

    def record(self, row: dict[str, Any], per_class: dict[str, float]) -> bool:
        """Add an epoch's metrics.csv row; True when its validation Dice is the best yet."""
        improved = self.best_epoch == 0 or row["val_dice"] > self.best_dice
        if improved:
            self.best_dice, self.best_epoch, self.bad_epochs = row["val_dice"], row["epoch"], 0
            self.best_per_class = per_class
        else:
            self.bad_epochs += 1
        self.rows.append(row)
        return improved

    @classmethod
    def restored(cls, state: dict[str, Any], rows: list[dict[str, str]]) -> Progress:
        """The progress ``last.pt`` saved, with the metrics rows of its epochs."""
        start_epoch = int(state["epoch"]) + 1
        return cls(
            start_epoch=start_epoch,
            best_dice=float(state["best_dice"]),
            best_epoch=int(state["best_epoch"]),
            bad_epochs=int(state["bad_epochs"]),
            best_per_class=dict(state["best_per_class"]),
            rows=[r for r in rows if int(r["epoch"]) < start_epoch],
        )


@dataclass
class Setup:
    """What `fit` decided before anything is written."""

    dataset: Path
    out: Path  #: the run folder the user named (shown in messages)
    folder: RunFolder  #: where the run is written: `out`, or beside it until it completes
    config: TrainConfig
    class_map: ClassMap
    regions: Regions | None = None
    state: dict[str, Any] | None = None  #: ``last.pt``, on --resume
    plan: dict[str, Any] | None = None  #: the plan config.json keeps (None: not planned)


class _First:
    """The first `n` batches of a loader, as a loader of length `n`."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


class Trainer:
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

    # The loop ---------------------------------------------------------------------------
    def run_training(self) -> FitResult:
        """Train from the first (or the resumed) epoch to the last, or an early stop."""
        self.on_train_start()
        stopped, epoch = "finished", self.progress.start_epoch - 1
        try:
            while epoch < self.config.epochs:
                epoch += 1
                self.on_epoch_start(epoch)
                train_loss = self.train_epoch(epoch)
                if self.on_epoch_end(epoch, train_loss, self.validate()):
                    stopped = "early stop"
                    break
        except KeyboardInterrupt:
            # The interrupted epoch did not finish; last.pt holds the one before.
            stopped, epoch = "interrupted", self._saved_epoch(epoch - 1)
        finally:
            self.run.loaders.close()  # the workers persist across epochs, not past the run
            stop(self.dist)
            self.saver.finish()  # nothing reads or moves the run folder while it is written
        return self.on_train_end(stopped, epoch)

    # Hooks ------------------------------------------------------------------------------
    def build(self) -> Run:
        """The data (checked, split) and what the epochs compute with; nothing is written
        but a volume folder's slice cache."""
        setup, config = self.setup, self.config
        if is_volume_folder(setup.dataset):
            self.data = load_volume_data(
                setup.dataset, self.folder.path, config, setup.state is not None, self.dist,
                setup.regions,
            )  # fmt: skip
        else:
            self.data = load_data(setup.dataset, self.folder.path, config, self.class_map,
                                  setup.state is not None, setup.regions)  # fmt: skip
        self.run = build_run(config, self.class_map, self.data, self.dist)
        return self.run

    def on_train_start(self) -> None:
        """Build, restore ``last.pt`` on --resume, fit a new planned run to its budget, show
        the plan, then write the run's records (after checking the disk has room for its
        checkpoints)."""
        run = self.build()
        if self.setup.state is not None:
            self.restore(self.setup.state)
        elif self.budget.to_fit:
            self.fit_budget()
        if self.setup.plan is not None:
            self.reporter.plan(self.setup.plan["choices"])
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

    def on_epoch_start(self, epoch: int) -> None:
        """Seed the epoch, note its start and learning rate, and report it."""
        self._seed_epoch(epoch)
        self.epoch_started = time.perf_counter()
        self.epoch_lr = self.run.learner.optimizer.param_groups[0]["lr"]
        self.reporter.epoch_start(epoch, self.config.epochs, len(self.run.loaders.train))

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimiser step on `batch`; the loss, still on the device."""
        return train_step(self.run, batch, self.config.clip_grad)

    def train_epoch(self, epoch: int) -> float:
        """`train_step` over the epoch's batches; the mean loss. A NaN loss stops the run
        naming the checkpoint that is kept."""
        try:
            return train_one_epoch(
                self.run, self.run.loaders.train, self.train_step, reporter=self.reporter
            )
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
        loader = run.loaders.val if batches is None else _First(run.loaders.val, batches)
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

    def on_epoch_end(
        self, epoch: int, train_loss: float, validation: tuple[float, int, dict[str, Any]]
    ) -> bool:
        """Record the epoch, re-fit the epochs to the budget, save and report.

        Returns:
            True when the run stops early (``patience`` epochs without a better Dice).
        """
        loss_sum, n, val = validation
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": loss_sum / max(n, 1),
            "val_dice": val["dice"],
            "val_iou": val["iou"],
            "val_images": n,  # summed over processes under torchrun
            "lr": self.epoch_lr,
            "seconds": time.perf_counter() - self.epoch_started,
            **{f"dice_{name}": v for name, v in val["per_class"].items()},
        }
        improved = self.progress.record(row, val["per_class"])
        spent = [*self.progress.epoch_seconds, time.perf_counter() - self.epoch_started]
        epochs = self.budget.epochs_after(epoch, spent, self.config.epochs)
        if epochs != self.config.epochs:
            self.set_epochs(epochs)
            if self.dist.main:
                self.write_records()
        if self.dist.main:
            self.save(improved)
        self.progress.epoch_seconds.append(time.perf_counter() - self.epoch_started)
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
        return FitResult(self.setup.out, *best, epoch, stopped, self.dist.main, thresholds)

    # What the hooks share ---------------------------------------------------------------
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
        learner.optimizer.load_state_dict(state["optimizer"])
        learner.scheduler.load_state_dict(state["scheduler"])
        total = steps * self.config.epochs
        if self.config.warm_restart:
            step = learner.scheduler.last_epoch
            learner.restart(total, warmup_steps(total - step, steps, self.config.warmup_epochs))
        else:
            learner.retarget(total)
        learner.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.restored(state, self.folder.metrics())
        set_rng_state(state["rng"])

    def fit_budget(self) -> None:
        """Time the run's first steps (they train: the same steps, seeded as epoch 1's) and
        part of a validation pass, and fit the plan to the budget: the epochs, and a smaller
        input where too few fit (then only the data loaders are built again)."""
        run = self.run
        self._seed_epoch(1)
        times = []
        for i, batch in enumerate(_First(run.loaders.train, WARM_STEPS + TIMED_STEPS)):
            tic = time.perf_counter()
            float(self.train_step(batch))  # reading the loss waits for the device
            if i >= WARM_STEPS or len(run.loaders.train) <= WARM_STEPS:
                times.append(time.perf_counter() - tic)
        tic, val_batches = time.perf_counter(), len(run.loaders.val)
        self.validate(TIMED_VAL_BATCHES)
        validation = (time.perf_counter() - tic) / min(TIMED_VAL_BATCHES, val_batches)
        steps = len(run.loaders.train)
        plan = self.budget.fit_plan(statistics.median(times), steps, validation * val_batches)
        before, self.config = self.config, replace(self.config, **plan.options())
        if self.setup.plan is not None:
            self.setup.plan = {**self.setup.plan, "choices": plan.to_json()}
        if (self.config.size, self.config.crop, self.config.resize) != (
            before.size, before.crop, before.resize
        ):  # fmt: skip
            run.loaders = build_loaders(
                self.config, self.class_map, self.data, self.dist, run.hardware
            )
        run.learner.retarget(len(run.loaders.train) * self.config.epochs)

    def save(self, improved: bool) -> None:
        """The best model (when this epoch improved), last.pt, metrics.csv and curves.png,
        snapshotted now and written in the background (`Saver`)."""
        learner, progress = self.run.learner, self.progress
        self.saver.save(
            learner.model,
            {
                "model": learner.model.state_dict(),
                "optimizer": learner.optimizer.state_dict(),
                "scheduler": learner.scheduler.state_dict(),
                "scaler": learner.scaler.state_dict(),
                "epoch": progress.rows[-1]["epoch"],
                "best_dice": progress.best_dice,
                "best_epoch": progress.best_epoch,
                "bad_epochs": progress.bad_epochs,
                "best_per_class": progress.best_per_class,
                "class_names": list(self.class_map.names),
                "config": self.config.to_json(),
                "rng": rng_state(),
            },
            progress.rows,
            improved,
        )

    def write_records(self) -> None:
        """classes.json, split.json and config.json (again when the budget re-fits)."""
        facts = run_facts(self.setup.dataset, self.config, self.class_map, self.data,
                          self.run, self.dist.world)  # fmt: skip
        self.folder.write_records(self.config, self.class_map, self.data.split, facts,
                                  self.setup.plan)  # fmt: skip

    def _seed_epoch(self, epoch: int) -> None:
        """Order and augmentation depend on (seed, epoch) alone, so a resumed run repeats
        exactly what an uninterrupted one would have done."""
        self.run.loaders.seed_epoch(epoch, self.config.seed * 100_003 + epoch)

    def _saved_epoch(self, fallback: int) -> int:
        """The epoch ``last.pt`` holds (after Ctrl-C), or `fallback` when there is none."""
        self.saver.finish()
        last = self.folder.last_checkpoint
        return int(load_checkpoint(last)["epoch"]) if last.is_file() else fallback
