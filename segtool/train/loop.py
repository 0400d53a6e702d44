"""`fit`: train a model on a dataset folder and write (or resume) its run folder.

`fit` reads as its steps: start, build, restore, then for each epoch run it (train one
epoch, validate, sum over processes), record it, save it, and stop when asked. One process on
CPU, CUDA or MPS, or several under ``torchrun`` (rank 0 alone prints, logs and saves). The
run folder is described in docs/architecture.md.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from segtool.core.classes import ClassMap
from segtool.core.swap import temp_name
from segtool.sources.volume_folder import is_volume_folder
from segtool.train.build import (
    Run,
    build_run,
    check_config,
    load_data,
)
from segtool.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist, start, stop, sum_validation
from segtool.train.model import save_model
from segtool.train.planning import (
    choose_config,
    dataset_classes,
    keep_to_budget,
    training_classes,
)
from segtool.train.runfolder import (
    LAST_CHECKPOINT,
    MODEL_DIR,
    check_room,
    draw_curves,
    plan_run,
    publish_run,
    read_metrics,
    write_metrics,
    write_records,
)
from segtool.train.schedule import warmup_steps
from segtool.train.steps import NonFiniteLoss, Reporter, scores, train_one_epoch, validate
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


def restore(
    run: Run, state: dict[str, Any] | None, out: Path, config: TrainConfig, warm_restart: bool
) -> Progress:
    """Continue where ``last.pt`` stopped (weights, optimiser, schedule, scaler, counters and
    random states, and the metrics rows before it); a new run starts at epoch 1.

    When the run's length changed (``--epochs``), the schedule continues smoothly from the
    current rate to the new end, or, with `warm_restart`, warms up to the peak again."""
    if state is None:
        return Progress()
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    schedule, step = run.scheduler.lr_lambdas[0], run.scheduler.last_epoch
    total = len(run.train_loader) * config.epochs
    if warm_restart:
        steps = len(run.train_loader)
        schedule.restart(step, total, warmup_steps(total - step, steps, config.warmup_epochs))
    elif schedule.total != total:
        schedule.retarget(step, total)
    run.scaler.load_state_dict(state["scaler"])
    start_epoch = int(state["epoch"]) + 1
    rows = [r for r in read_metrics(out / "metrics.csv") if int(r["epoch"]) < start_epoch]
    set_rng_state(state["rng"])
    return Progress(
        start_epoch=start_epoch,
        best_dice=float(state["best_dice"]),
        best_epoch=int(state["best_epoch"]),
        bad_epochs=int(state["bad_epochs"]),
        best_per_class=dict(state["best_per_class"]),
        rows=rows,
    )


def _train(
    run: Run, config: TrainConfig, epoch: int, out: Path, run_dir: Path, reporter: Reporter
) -> float:
    """One training epoch; a NaN loss stops the run naming the checkpoint that is kept (it is
    in `run_dir` now and will be in `out`)."""
    try:
        return train_one_epoch(
            run.train_model,
            run.train_loader,
            run.loss_fn,
            run.optimizer,
            run.scheduler,
            run.scaler,
            run.device,
            amp_dtype=run.amp_dtype,
            clip_grad=config.clip_grad,
            channels_last=run.channels_last,
            reporter=reporter,
        )
    except NonFiniteLoss as exc:
        last = out / LAST_CHECKPOINT
        saved = (run_dir / LAST_CHECKPOINT).is_file()
        kept = f"the last good checkpoint is {last}" if saved else "no checkpoint was written"
        raise NonFiniteLoss(
            f"epoch {epoch}: {exc}; training stopped and {kept}; lower --lr (now "
            f"{config.lr}) or keep --clip-grad on"
        ) from None


def run_epoch(
    run: Run,
    config: TrainConfig,
    class_map: ClassMap,
    epoch: int,
    out: Path,
    reporter: Reporter,
    dist: Dist,
    run_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train one epoch, validate, and sum over processes.

    Returns:
        (the epoch's metrics.csv row, validation Dice per foreground class).
    """
    # Order and augmentation depend on (seed, epoch) alone, so a resumed run repeats
    # exactly what an uninterrupted one would have done.
    epoch_seed = config.seed * 100_003 + epoch
    run.generator.manual_seed(epoch_seed)
    run.train_ds.reseed(epoch_seed)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    tic = time.perf_counter()
    reporter.epoch_start(epoch, config.epochs, len(run.train_loader))
    lr = run.optimizer.param_groups[0]["lr"]
    train_loss = _train(run, config, epoch, out, run_dir or out, reporter)
    per_case: dict | None = {} if run.val_cases is not None else None
    loss_sum, counts, n = validate(
        run.model,
        run.val_loader,
        run.loss_fn,
        class_map,
        run.device,
        amp_dtype=run.amp_dtype,
        per_case=per_case,
    )
    counts, loss_sum, n = sum_validation(counts, loss_sum, n, run.device, dist)
    if per_case is None:
        val = scores(counts, class_map)
    else:  # volumes: each case scored in 3-D, then the mean over cases
        k = class_map.num_classes
        val = volume_scores(sum_cases(per_case, run.val_cases, k, run.device, dist), class_map)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": loss_sum / max(n, 1),
        "val_dice": val["dice"],
        "val_iou": val["iou"],
        "val_images": n,  # summed over processes under torchrun
        "lr": lr,
        "seconds": time.perf_counter() - tic,
        **{f"dice_{name}": v for name, v in val["per_class"].items()},
    }
    return row, val["per_class"]


def save_epoch(
    out: Path,
    run: Run,
    progress: Progress,
    config: TrainConfig,
    class_map: ClassMap,
    improved: bool,
) -> None:
    """The best model (when this epoch improved), metrics.csv, last.pt and curves.png."""
    if improved:
        save_model(run.model, out / MODEL_DIR)
    write_metrics(out / "metrics.csv", progress.rows)
    save_checkpoint(
        out / LAST_CHECKPOINT,
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "epoch": progress.rows[-1]["epoch"],
            "best_dice": progress.best_dice,
            "best_epoch": progress.best_epoch,
            "bad_epochs": progress.bad_epochs,
            "best_per_class": progress.best_per_class,
            "class_names": list(class_map.names),
            "config": asdict(config),
            "rng": rng_state(),
        },
    )
    draw_curves(out / "curves.png", progress.rows)


def _saved_epoch(out: Path, fallback: int) -> int:
    """The epoch ``last.pt`` holds (after Ctrl-C), or `fallback` when there is none."""
    last = out / LAST_CHECKPOINT
    return int(load_checkpoint(last)["epoch"]) if last.is_file() else fallback


def fit(
    dataset: Path,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    plan: bool = True,
    warm_restart: bool = False,
    clock: float | None = None,
    **options: Any,
) -> FitResult:
    """Train a model on a dataset folder and write the run folder `out`.

    Args:
        dataset: folder with images/, masks/, classes.json and optionally split.json.
        out: the run folder (config.json, classes.json, split.json, model/,
            checkpoints/last.pt, metrics.csv, curves.png).
        resume: continue from ``out/checkpoints/last.pt``; a different ``epochs`` extends or
            shortens it, the learning rate continuing smoothly from where it is.
        overwrite: replace an existing `out`.
        reporter: receives progress; None trains quietly.
        plan: choose the options not given from the dataset and the machine (`make_plan`);
            False leaves them to `TrainConfig`'s defaults.
        warm_restart: on resume, warm the learning rate up to its peak again and decay it
            over the new length, instead of continuing smoothly.
        clock: `time.monotonic()` when the user started the run (``time_budget`` counts
            from it; default: now).
        **options: any `TrainConfig` field; None means planned (or the default).

    Returns:
        The best epoch, its scores, and how the run stopped.

    Raises:
        SegtoolError: bad data or options, an existing `out`, or a loss that became NaN.
    """
    clock = time.monotonic() if clock is None else clock
    dist = start(options.get("device"))
    reporter = reporter if dist.main and reporter else Reporter()
    class_map = dataset_classes(dataset)
    outputs = plan_run(out, dataset, options.get("split_file"), resume, overwrite)
    state = load_checkpoint(out / LAST_CHECKPOINT) if resume else None
    class_map, regions = training_classes(class_map, options, state)
    config, record = choose_config(
        dataset, out, state, class_map, regions, options, plan, dist, clock
    )
    check_config(config)
    if record is not None:
        reporter.plan(record["choices"])
    # Checked; only now is anything written. A new run is built beside `out` (its data cache
    # too) and moved in at the end: an --overwrite'd run stays whole until the new one completes.
    fresh, run_dir = outputs is not None and not os.path.lexists(out), out
    if outputs is not None:
        outputs.owner = os.getppid() if dist.world > 1 else os.getpid()  # one name for all ranks
        run_dir = temp_name(out, pid=outputs.owner)
        outputs = outputs if dist.main else None  # rank 0 alone writes
        if outputs is not None:
            outputs.start()
    try:
        result = _train_into(
            run_dir,
            dataset,
            out,
            resume,
            config,
            class_map,
            regions,
            state,
            record,
            reporter,
            dist,
            clock,
            warm_restart,
        )
    except BaseException as exc:
        if isinstance(exc, OSError) and outputs is not None:
            outputs.name_outputs(exc)
        publish_run(outputs, run_dir, keep=fresh)  # a new run that saved an epoch stays
        raise
    result.kept = publish_run(outputs, run_dir, keep=fresh or result.stopped != "interrupted")
    return result


def _train_into(
    run_dir: Path,
    dataset: Path,
    out: Path,
    resume: bool,
    config: TrainConfig,
    class_map: ClassMap,
    regions: Any,
    state: dict | None,
    record: dict | None,
    reporter: Reporter,
    dist: Dist,
    clock: float,
    warm_restart: bool,
) -> FitResult:
    """`fit` after its checks: data, model, the epochs, written into `run_dir`."""
    data = (
        load_volume_data(dataset, run_dir, config, resume, dist, regions)
        if is_volume_folder(dataset)
        else load_data(dataset, run_dir, config, class_map, resume, regions)
    )
    run = build_run(config, class_map, data, dist)
    progress = restore(run, state, out, config, warm_restart)
    records = partial(write_records, run_dir, dataset, config, class_map, data, run, dist.world)
    if dist.main:
        check_room(run_dir, run.model, out)  # before the first epoch, not at its checkpoint
        records(record)
    reporter.start(
        {
            "device": str(run.device),
            "amp": run.amp_dtype,
            "train": len(data.train),
            "val": len(data.val),
            "epochs": config.epochs,
            "start_epoch": progress.start_epoch,
            "workers": run.workers,
            "mode": run.mode,
            "time_budget": config.time_budget,
        }
    )
    stopped, epoch, seconds = "finished", progress.start_epoch - 1, []
    try:
        while epoch < config.epochs:
            epoch, tic = epoch + 1, time.perf_counter()
            row, per_class = run_epoch(run, config, class_map, epoch, out, reporter, dist, run_dir)
            improved = progress.record(row, per_class)
            spent = [*seconds, time.perf_counter() - tic]
            if keep_to_budget(run, config, epoch, spent, clock) and dist.main:
                records(record)
            if dist.main:
                save_epoch(run_dir, run, progress, config, class_map, improved)
            seconds.append(time.perf_counter() - tic)
            reporter.epoch_end(row)
            if config.patience is not None and progress.bad_epochs >= config.patience:
                stopped = "early stop"
                break
    except KeyboardInterrupt:
        # The interrupted epoch did not finish; last.pt holds the one before.
        stopped, epoch = "interrupted", _saved_epoch(run_dir, epoch - 1)
    finally:
        stop(dist)
    thresholds = None
    if dist.main and class_map.multilabel:
        finished = progress.best_epoch > 0 and stopped != "interrupted"
        thresholds = tune_best_model(run_dir, config, class_map, data, run, finished)
    best = (progress.best_epoch, progress.best_dice, progress.best_per_class)
    return FitResult(out, *best, epoch, stopped, dist.main, thresholds)
