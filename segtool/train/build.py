"""What one training run computes with, built from its config: the data, the device, the
model, the loss, the optimiser and its schedule, and the loaders."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from segtool.core.classes import ClassMap, mode_for
from segtool.core.dataset import Pair, check_pairs, files_digest, find_pairs, split_pairs
from segtool.core.device import amp_dtype_for, pick_device
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.parallel import ProgressFn
from segtool.core.regions import Regions
from segtool.core.volumes import AXES
from segtool.train.config import TrainConfig
from segtool.train.data import NORMALIZATIONS, SegmentationDataset, config_split
from segtool.train.device_augment import AUGMENT_ON, augmentations
from segtool.train.distributed import Dist
from segtool.train.limits import check_batch
from segtool.train.loaders import (
    Loaders,
    decoded_cache,
    default_workers,
    epoch_draws,
    make_loader,
    training_sampler,
)
from segtool.train.losses import LOSSES, build_loss
from segtool.train.model import build_model, check_names
from segtool.train.presence import check_presence
from segtool.train.runfolder import RunFolder
from segtool.train.sampling import draw_sampler, resolve_class_weights, train_counts
from segtool.train.schedule import WarmupCosine, warmup_steps
from segtool.train.transforms import PRESETS
from segtool.train.volume_data import CACHE_DIR, VolumeData, volume_datasets
from segtool.train.volumes import case_fingerprint


@dataclass
class TrainingData:
    """The checked pairs of a dataset and the split they are trained with."""

    pairs: list[Pair]
    skipped: list[str]
    split: dict
    train: list[Pair]
    val: list[Pair]
    regions: Regions | None = None  # --regions: the dataset's class ids -> region bits
    notes: list[str] = field(default_factory=list)  # classes a split lacks (`check_presence`)
    counts: np.ndarray | None = None  # the training images' pixel counts, where imbalance asks
    cache_dir: Path = Path(CACHE_DIR)  # where a decoded cache on disk goes (RUN/cache, --cache)


@dataclass
class Hardware:
    """Where and how the run computes."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    workers: int  #: DataLoader workers


@dataclass
class Learner:
    """What learns: `model` is what is saved; `train_model` what is stepped (the same model,
    wrapped in DistributedDataParallel under torchrun); the loss, AdamW, its schedule
    (`WarmupCosine` under ``LambdaLR``) and the AMP scaler."""

    model: nn.Module
    train_model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler

    def retarget(self, total: int) -> None:
        """End the schedule's decay at step `total`, continuing smoothly from now."""
        schedule, step = self.scheduler.lr_lambdas[0], self.scheduler.last_epoch
        if schedule.total != total:
            schedule.retarget(step, total)
            # The rate of the next step was set by the last scheduler step; a warm-up shortened
            # to the new length changes it now.
            for group, base in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * schedule(step)

    def load_optimizer(self, saved: dict[str, Any]) -> None:
        """AdamW's state from a checkpoint, stepped as this machine steps it (`adamw_kind`):
        a run begun on the CPU and resumed on a GPU steps fused, and the other way round."""
        kind = {k: self.optimizer.defaults[k] for k in ("fused", "foreach")}
        groups = [{**group, **kind} for group in saved["param_groups"]]
        self.optimizer.load_state_dict({**saved, "param_groups": groups})

    def restart(self, total: int, warmup: int) -> None:
        """Warm up to the peak rate again over `warmup` steps, then decay to step `total`."""
        self.scheduler.lr_lambdas[0].restart(self.scheduler.last_epoch, total, warmup)


@dataclass
class Run:
    """Everything the epochs use, built from the config by `build_run`."""

    hardware: Hardware
    learner: Learner
    loaders: Loaders
    mode: str  #: binary, multiclass or multilabel (`core.classes.mode_for`)


def load_data(
    dataset: Path,
    run_dir: Path,
    config: TrainConfig,
    class_map: ClassMap,
    resume: bool,
    regions: Regions | None = None,
    on_progress: ProgressFn | None = None,
) -> TrainingData:
    """Pair and check the dataset (against the map its masks use: `regions`' source map with
    `regions`; `on_progress` per pair), and take the split: the run's own on --resume, else
    `resolve_split`'s.

    Raises:
        SegtoolError: bad pairs or split, a batch larger than the training set, a spent budget.
    """
    pairs, skipped = find_pairs(dataset, skip_unpaired=config.skip_unpaired)
    check_pairs(pairs, regions.source if regions else class_map, on_progress=on_progress)
    if resume:
        run = RunFolder(run_dir)
        split = run.split({p.stem for p in pairs}, required=True)
        run.check_same_dataset(dataset, pairs, split)
    else:
        split = config_split(dataset, pairs, config)
    by_stem = {p.stem: p for p in pairs}
    train, val = [by_stem[s] for s in split["train"]], [by_stem[s] for s in split["val"]]
    if config.batch_size > len(train):
        raise SegtoolError(
            f"--batch-size {config.batch_size} is larger than the {len(train)} training "
            f"images; use --batch-size {len(train)} or less, or add images"
        )
    # A new run is checked for what its splits hold; a resumed one was checked when it began.
    notes = [] if resume else check_presence(train, val, regions.source if regions else class_map)
    wanted = config.oversample or config.class_weights == "auto"
    counts = train_counts(train, class_map, regions) if wanted else None
    cache_dir = Path(config.cache) if config.cache else run_dir / CACHE_DIR
    return TrainingData(pairs, skipped, split, train, val, regions, notes, counts, cache_dir)


def check_config(config: TrainConfig) -> None:
    """Check every option before the slow start-up: numbers, fractions and the device
    (`TrainConfig.check`), then each name against the table that builds it.

    Raises:
        SegtoolError: the first bad option, with the valid choices.
    """
    check_choice("loss", config.loss, LOSSES)
    check_choice("axis", config.axis, AXES)
    check_names(config.arch, config.encoder)
    check_choice("augment", config.augment, PRESETS)
    check_choice("augment-on", config.augment_on, AUGMENT_ON)
    check_choice("normalize", config.normalize, NORMALIZATIONS)
    config.check()
    check_batch(config)


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random streams."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validation_dataset(
    config: TrainConfig, class_map: ClassMap, data: TrainingData, decoded: Any = None
) -> SegmentationDataset:
    """Every validation image of `data` as validation reads it (`--size`, `--resize`, no crop
    or augmentation); `decoded`: the run's decoded cache, if any."""
    return SegmentationDataset(
        data.val, class_map, size=config.size, resize=config.resize,
        normalization=config.normalize, regions=data.regions, decoded=decoded,
    )  # fmt: skip


def _datasets(
    config: TrainConfig, class_map: ClassMap, data: TrainingData | VolumeData, dist: Dist,
    on_progress: ProgressFn | None = None,
) -> tuple[Dataset, Dataset]:  # fmt: skip
    if isinstance(data, VolumeData):
        train_ds, val_ds = volume_datasets(config, class_map, data)
        if dist.world > 1:  # each process validates every world-th slice; counts are summed
            val_ds = Subset(val_ds, list(range(dist.rank, len(val_ds), dist.world)))
        return train_ds, val_ds
    augment, on_device = augmentations(
        config.augment, config.augment_on, class_map.ignore_index, config.seed
    )
    decoded = decoded_cache(config, class_map, data, data.cache_dir, dist, on_progress)
    train_ds = SegmentationDataset(
        data.train,
        class_map,
        size=config.size,
        resize=config.resize,
        crop=config.crop,
        fg_crop=config.fg_crop,
        augment=augment,
        normalization=config.normalize,
        seed=config.seed,
        regions=data.regions,
        decoded=decoded,
        on_device=on_device,
    )
    val_ds: Dataset = validation_dataset(config, class_map, data, decoded)
    if dist.world > 1:  # each process validates every world-th image; the counts are summed
        val_ds = Subset(val_ds, list(range(dist.rank, len(val_ds), dist.world)))
    return train_ds, val_ds


def _model(
    config: TrainConfig, class_map: ClassMap, device: torch.device, in_channels: int = 3
) -> nn.Module:
    model = build_model(
        config.arch,
        config.encoder,
        config.encoder_weights,
        class_map.num_classes,
        class_map.multilabel,
        in_channels,
        decoder_channels=config.decoder_channels,
    )
    model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def build_loaders(
    config: TrainConfig,
    class_map: ClassMap,
    data: TrainingData | VolumeData,
    dist: Dist,
    hardware: Hardware,
    on_progress: ProgressFn | None = None,
) -> Loaders:
    """The datasets and their loaders, each process its share (`on_progress`: per pair decoded)."""
    train_ds, val_ds = _datasets(config, class_map, data, dist, on_progress)
    counts = getattr(data, "counts", None)  # none for a volume folder
    sampler = (
        draw_sampler(config, counts, dist)
        if config.oversample
        else training_sampler(train_ds, dist.rank, dist.world, config.seed, epoch_draws(config))
    )
    loader = partial(make_loader, config=config, run_device=hardware.device,
                     workers=hardware.workers, ignore=class_map.ignore_index)  # fmt: skip
    return Loaders(
        train_ds=train_ds,
        sampler=sampler,
        train=loader(train_ds, sampler=sampler),
        val=loader(val_ds),
        val_cases=[v.case for v in data.val] if isinstance(data, VolumeData) else None,
        on_device=getattr(train_ds, "on_device", None),
        base_seed=config.seed,
    )


def adamw_kind(device: torch.device, params: list[torch.Tensor]) -> dict[str, bool | None]:
    """How AdamW steps: one fused kernel on CUDA (all `params` on the device), else the
    multi-tensor (``foreach``) loop, never one tensor at a time."""
    fused = device.type == "cuda" and all(p.device.type == "cuda" for p in params)
    return {"fused": True, "foreach": None} if fused else {"fused": None, "foreach": True}


def fixed_input(config: TrainConfig) -> bool:
    """Whether every training batch has one shape (``size`` or ``crop``): then cuDNN may time
    its convolution algorithms once per shape and keep the fastest (``cudnn.benchmark``)."""
    return config.size is not None or config.crop is not None


def hardware_for(config: TrainConfig, device: torch.device) -> Hardware:
    """How the steps run on `device`: bf16 autocast (fp16 where bf16 is missing), channels_last
    and, when every batch has one shape, ``cudnn.benchmark`` on CUDA; the loader's workers."""
    if device.type == "cuda" and fixed_input(config):
        torch.backends.cudnn.benchmark = True
    workers = config.workers if config.workers is not None else default_workers(device)
    return Hardware(device, amp_dtype_for(device, config.amp), device.type == "cuda", workers)


def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """``--compile``: `model` under ``torch.compile`` (compiled at its first step).

    Raises:
        SegtoolError: torch.compile cannot run here (its compiler is missing).
    """
    import shutil

    from torch._dynamo.eval_frame import is_dynamo_supported

    missing = None
    if not is_dynamo_supported():
        missing = f"torch.compile does not support this Python or torch {torch.__version__}"
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        missing = (
            None if has_triton() else "torch.compile on CUDA needs triton (pip install triton)"
        )
    elif device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        missing = "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    if missing:
        raise SegtoolError(f"--compile: {missing}; train without --compile")
    return torch.compile(model)


def build_run(
    config: TrainConfig, class_map: ClassMap, data: TrainingData | VolumeData, dist: Dist,
    on_progress: ProgressFn | None = None,
) -> Run:  # fmt: skip
    """Device, model, loss, loaders, AdamW with warm-up and cosine decay, and the AMP scaler,
    built in a fixed order after seeding, so a resumed run starts from the same state
    (`on_progress`: per pair decoded)."""
    device = pick_device(config.device, dist.local_rank)
    hardware = hardware_for(config, device)
    amp_dtype = hardware.amp_dtype
    seed_all(config.seed)
    mode = mode_for(class_map.num_classes, class_map.multilabel)
    loss_fn = build_loss(
        config.loss,
        mode,
        class_map.ignore_index,
        bce_weight=config.bce_weight,
        dice_weight=config.dice_weight,
        tversky_alpha=config.tversky_alpha,
        tversky_beta=config.tversky_beta,
        focal_gamma=config.focal_gamma,
        class_weights=resolve_class_weights(config, data),
    )
    volumes = isinstance(data, VolumeData)
    model = _model(config, class_map, device, data.in_channels if volumes else 3)
    loaders = build_loaders(config, class_map, data, dist, hardware, on_progress)
    steps = len(loaders.train)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, **adamw_kind(device, params)
    )
    total = steps * config.epochs
    warmup = warmup_steps(total, steps, config.warmup_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    train_model: nn.Module = model
    if dist.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        train_model = compiled(train_model, device)
    learner = Learner(model, train_model, loss_fn, optimizer, scheduler, scaler)
    return Run(hardware, learner, loaders, mode)


def run_facts(
    dataset: Path,
    config: TrainConfig,
    class_map: ClassMap,
    data: TrainingData | VolumeData,
    run: Run,
    world: int,
) -> dict[str, Any]:
    """What config.json records besides the options: the dataset and its fingerprints (for a
    volume folder its channels, axis and standardisation), the device and the counts."""
    if isinstance(data, VolumeData):
        cases = "-".join(case_fingerprint(c, config.axis) for c in data.volumes.cases)
        files = {"dataset_fingerprint": cases[:64], "volumes": data.record(config)}
    else:
        used = split_pairs(data.pairs, data.split)
        files = {
            "dataset_fingerprint": files_digest(data.pairs),
            "dataset_files": files_digest(used, times=False),
        }
    images = {"train": len(data.train), "val": len(data.val), "test": len(data.split["test"])}
    return {
        "dataset": str(dataset.resolve()),
        **files,
        "classes": list(class_map.names),
        "ignore_index": class_map.ignore_index,
        "mode": run.mode,
        "images": {**images, "skipped_unpaired": len(data.skipped)},
        "device": str(run.hardware.device),
        "amp": str(run.hardware.amp_dtype).removeprefix("torch.")
        if run.hardware.amp_dtype
        else None,
        "world_size": world,
        "class_weights": resolve_class_weights(config, data),
    }
