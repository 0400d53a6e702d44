"""Making the plan for a new run: measure the dataset and the machine, choose, probe the GPU
for the batch size, and time real steps to fit a time budget. During the run,
`keep_to_budget` re-plans the number of epochs (and the schedule, smoothly) from the epochs'
measured times."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segtool.core.classes import ClassMap, mode_for, read_classes_json
from segtool.core.constants import CLASSES_FILE
from segtool.core.dataset import find_pairs
from segtool.core.errors import SegtoolError
from segtool.core.multilabel import mask_bits
from segtool.core.regions import Regions, parse_regions
from segtool.sources.volume_folder import is_volume_folder, read_volume_dataset
from segtool.train.build import Run, build_run, check_config, load_data
from segtool.train.config import TrainConfig, resume_config
from segtool.train.distributed import Dist
from segtool.train.fingerprint import Fingerprint, Machine, measure_dataset, measure_machine
from segtool.train.geometry import STRIDE, parse_size
from segtool.train.plan import Plan, Timing, fit_budget, plan_training
from segtool.train.steps import train_one_epoch, validate

#: Batch sizes the GPU probe tries, largest last.
PROBE_BATCHES = (8, 16, 32, 64)
#: The share of GPU memory a probed batch may use (the rest is headroom).
GPU_HEADROOM = 0.7


@dataclass
class Planned:
    """A new run's config, and the plan record written into config.json."""

    config: TrainConfig
    plan: Plan
    fingerprint: Fingerprint
    machine: Machine

    def record(self) -> dict[str, Any]:
        """The plan as config.json's ``plan``."""
        return {
            "choices": self.plan.to_json(),
            "fingerprint": self.fingerprint.to_json(),
            "machine": self.machine.to_json(),
        }


def _config(options: dict[str, Any], plan: Plan) -> TrainConfig:
    merged = {**options, **plan.options()}
    return TrainConfig.from_options(**{k: v for k, v in merged.items() if v is not None})


class _First:
    """The first `n` batches of a loader, as a loader of length `n`."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def _step_seconds(run: Run, steps: int) -> float:
    """The median time of `steps` training steps, after two that pay for allocation and
    caches (the median: a shared machine's pauses do not count)."""

    def epoch(n: int) -> None:
        train_one_epoch(
            run.train_model, _First(run.train_loader, n), run.loss_fn, run.optimizer,
            run.scheduler, run.scaler, run.device, amp_dtype=run.amp_dtype,
            channels_last=run.channels_last,
        )  # fmt: skip

    epoch(2)
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        epoch(1)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def time_steps(
    config: TrainConfig,
    class_map: ClassMap,
    regions: Regions | None,
    dataset: Path,
    out: Path,
    dist: Dist,
    clock: float,
) -> Timing:
    """Build the run as it will be built and time a few training steps and validation.

    Returns:
        The seconds per step and per validation pass, and what is spent once (so far, plus
        building the run again).
    """
    tic = time.perf_counter()
    data = load_data(dataset, out, config, class_map, False, regions)
    run = build_run(config, class_map, data, dist)
    build = time.perf_counter() - tic
    step = _step_seconds(run, steps=5)
    val_batches = len(run.val_loader)
    tic = time.perf_counter()
    validate(
        run.model, _First(run.val_loader, 2), run.loss_fn, class_map, run.device,
        amp_dtype=run.amp_dtype,
    )  # fmt: skip
    validation = (time.perf_counter() - tic) / min(2, val_batches) * val_batches
    return Timing(step, len(run.train_loader), validation, time.monotonic() - clock + build)


def probe_batch_size(config: TrainConfig, class_map: ClassMap, fp: Fingerprint, limit: int) -> int:
    """The largest of `PROBE_BATCHES` (at most `limit`) whose training step fits in
    `GPU_HEADROOM` of the GPU's memory, tried on random input of the planned size (the first
    when even that does not fit: training then says so itself)."""
    from segtool.core.device import amp_dtype_for, autocast
    from segtool.train.config import parse_channels
    from segtool.train.losses import build_loss
    from segtool.train.model import build_model

    device = torch.device("cuda")
    box = parse_size(config.size) or ((config.crop,) * 2 if config.crop else fp.largest_size)
    height, width = (-(-side // STRIDE) * STRIDE for side in box)
    model = build_model(
        config.arch, config.encoder, config.encoder_weights, class_map.num_classes,
        decoder_channels=parse_channels(config.decoder_channels),
    ).to(device)  # fmt: skip
    mode = mode_for(class_map.num_classes, class_map.multilabel)
    loss_fn = build_loss(config.loss, mode, class_map.ignore_index)
    dtype = amp_dtype_for(device, config.amp)
    total = torch.cuda.get_device_properties(device).total_memory
    best = PROBE_BATCHES[0]
    for batch in (b for b in PROBE_BATCHES if b <= limit):
        torch.cuda.reset_peak_memory_stats(device)
        try:
            x = torch.randn(batch, 3, height, width, device=device)
            y = torch.zeros(batch, height, width, dtype=torch.int64, device=device)
            with autocast(device, dtype):
                loss = loss_fn(model(x), y)
            loss.backward()
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
        if torch.cuda.max_memory_allocated(device) > GPU_HEADROOM * total:
            break
        best = batch
    del model
    torch.cuda.empty_cache()
    return best


def make_plan(
    dataset: Path,
    out: Path,
    class_map: ClassMap,
    regions: Regions | None,
    options: dict[str, Any],
    dist: Dist,
    clock: float,
) -> Planned:
    """Measure, choose, probe and (with a time budget) time: the config a new run trains with.

    Args:
        dataset: the dataset folder.
        out: the run folder (not written here).
        class_map: the classes the model learns.
        regions: multi-label regions over the dataset's classes, if any.
        options: the options the user gave (None: unset); each wins over the plan.
        dist: the process group (timing runs on this process's device).
        clock: `time.monotonic()` when the run started; the budget counts from it.

    Returns:
        The config and the plan behind it.
    """
    pairs, _ = find_pairs(dataset, skip_unpaired=bool(options.get("skip_unpaired")))
    fp = measure_dataset(pairs, regions.source if regions else class_map)
    machine = measure_machine(options.get("device") or "auto")
    plan = plan_training(fp, machine, options)
    config = _config(options, plan)
    if machine.device == "cuda" and options.get("batch_size") is None:
        limit = max(int(fp.n_images * 0.7) // 4, PROBE_BATCHES[0])
        batch = probe_batch_size(config, class_map, fp, limit)
        plan.set(
            "batch_size", batch, f"the largest batch that fits {GPU_HEADROOM:.0%} of GPU memory"
        )
        config = _config(options, plan)
    if config.time_budget:
        config.check()
        timing = time_steps(config, class_map, regions, dataset, out, dist, clock)
        fit_budget(plan, fp, timing, config.time_budget)
        config = _config(options, plan)
    return Planned(config, plan, fp, machine)


def dataset_classes(dataset: Path) -> ClassMap:
    """The dataset's class map: its ``classes.json``, or a volume folder's ``dataset.json``
    labels.

    Raises:
        SegtoolError: there is none, or it is malformed.
    """
    if is_volume_folder(dataset):
        return read_volume_dataset(dataset).class_map
    path = dataset / CLASSES_FILE
    if not path.is_file():
        raise SegtoolError(f"{path}: no class map; rasterize with segtool or add a classes.json")
    return read_classes_json(path)


def training_classes(
    class_map: ClassMap, options: dict[str, Any], state: dict[str, Any] | None
) -> tuple[ClassMap, Regions | None]:
    """The classes the model learns: the dataset's, or with ``regions`` (given, or the resumed
    run's) the regions' multi-label map.

    Raises:
        SegtoolError: bad regions, --tune-thresholds on exclusive classes, or more overlapping
            classes than training takes.
    """
    text = options.get("regions") or (state["config"].get("regions") if state else None)
    regions = parse_regions(text, class_map) if text else None
    if regions is not None:
        class_map = regions.class_map
    if options.get("tune_thresholds") and not class_map.multilabel:
        raise SegtoolError(
            "--tune-thresholds tunes one cut per class of a multi-label model; this dataset's "
            "masks are exclusive (add --regions, or drop --tune-thresholds)"
        )
    if class_map.multilabel and mask_bits(class_map.num_foreground) > 16:
        raise SegtoolError(
            f"{class_map.num_foreground} overlapping classes: training takes multi-label masks "
            f"of up to 15 classes (16-bit); merge classes"
        )
    return class_map, regions


def choose_config(
    dataset: Path,
    out: Path,
    state: dict[str, Any] | None,
    class_map: ClassMap,
    regions: Regions | None,
    options: dict[str, Any],
    plan: bool,
    dist: Dist,
    clock: float,
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's config and the plan record: the checkpoint's own on --resume (with the plan
    it was made with), else the plan's (or the defaults') under the options given."""
    if state:
        saved = out / "config.json"
        record = json.loads(saved.read_text()).get("plan") if saved.is_file() else None
        return resume_config(out, options, state, class_map), record
    if options.get("time_budget") and dist.world > 1:
        raise SegtoolError("--time-budget plans one process; under torchrun pass --epochs")
    if is_volume_folder(dataset):  # volumes train with the options given and the defaults
        if options.get("time_budget"):
            raise SegtoolError("--time-budget plans image datasets; for volumes pass --epochs")
        return TrainConfig.from_options(**options), None
    if not plan:
        return TrainConfig.from_options(**options), None
    planned = make_plan(dataset, out, class_map, regions, options, dist, clock)
    return planned.config, planned.record()


def keep_to_budget(
    run: Run, config: TrainConfig, epoch: int, seconds: list[float], clock: float
) -> bool:
    """After `epoch`, set ``config.epochs`` to what fits the rest of the time budget at the
    epochs' mean duration (`seconds`, this invocation's), and re-plan the schedule smoothly.

    Returns:
        True when the number of epochs changed.
    """
    if not config.time_budget or not seconds:
        return False
    left = config.time_budget - (time.monotonic() - clock)
    epochs = max(epoch + round(left / (sum(seconds) / len(seconds)) - 0.3), epoch)
    if epochs == config.epochs:
        return False
    config.epochs = epochs
    step = run.scheduler.last_epoch
    run.scheduler.lr_lambdas[0].retarget(step, len(run.train_loader) * epochs)
    return True


def plan_run(dataset: Path, *, clock: float | None = None, **options: Any) -> Planned:
    """The plan `fit` makes for a new run on `dataset` under `options`, without training
    (``--plan-only``); with a ``time_budget`` it times real steps, as `fit` does. The planned
    config is checked as `fit` checks it: a plan shown is a plan that runs.

    Raises:
        SegtoolError: bad data or options.
    """
    class_map, regions = training_classes(dataset_classes(dataset), options, None)
    clock = time.monotonic() if clock is None else clock
    planned = make_plan(dataset, Path(), class_map, regions, options, Dist(), clock)
    check_config(planned.config)
    return planned
