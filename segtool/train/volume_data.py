"""Training on a volume folder: its split of cases, the slice cache, the slice datasets, and
validation scores computed per case in 3-D.

`fit` takes the same steps for volumes as for photos; this module supplies what differs.
The cases are checked, decoded once into the cache (rank 0 alone writes it under torchrun)
and served as 2-D slices. Validation adds every slice's counts into its case's, so a case's
Dice is its 3-D Dice, and the epoch's score is the mean over cases (as evaluate reports it).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtool.core.classes import ClassMap
from segtool.core.errors import SegtoolError
from segtool.core.metrics import Counts, case_mean, dice, iou, nanmean
from segtool.core.regions import Regions
from segtool.core.volumes import STANDARDIZATION
from segtool.sources.nifti import check_cases
from segtool.sources.volume_folder import VolumeDataset, read_volume_dataset
from segtool.train.config import TrainConfig
from segtool.train.data import config_split
from segtool.train.device_augment import augmentations
from segtool.train.distributed import Dist, barrier
from segtool.train.runfolder import RunFolder
from segtool.train.slices import VolumeSliceDataset
from segtool.train.volumes import CachedVolume, build_cache, case_fingerprint

#: The cache folder inside a run, unless --cache names another.
CACHE_DIR = "cache"


@dataclass
class VolumeData:
    """The checked, cached cases of a volume folder and the split they are trained with."""

    volumes: VolumeDataset
    split: dict
    train: list[CachedVolume]
    val: list[CachedVolume]
    regions: Regions | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        """One model input channel per MRI sequence."""
        return len(self.volumes.channels)

    def record(self, config: TrainConfig) -> dict[str, Any]:
        """What config.json keeps so predict reads new volumes the way training did."""
        return {
            "layout": self.volumes.layout,
            "channels": list(self.volumes.channels),
            "axis": config.axis,
            "standardization": STANDARDIZATION,
            "label_ignore": self.volumes.label_ignore,
            "statistics": {v.case: v.meta["statistics"] for v in self.train + self.val},
        }


def cache_folder(config: TrainConfig, run_dir: Path, cases: list, dist: Dist) -> Path:
    """Where the slice cache is: ``--cache``; else ``RUN/cache`` on one machine; across
    machines a folder in each machine's temporary directory named by the cases' fingerprints
    and the slice axis (the run folder being built has another name on every machine: it
    carries the machine's name and process id), written by each machine's first process."""
    if config.cache:
        return Path(config.cache)
    if dist.machines == 1:
        return run_dir / CACHE_DIR
    key = hashlib.sha256("-".join(case_fingerprint(c, config.axis) for c in cases).encode())
    return Path(tempfile.gettempdir()) / f"segtool-slices-{key.hexdigest()[:24]}"


def load_volume_data(
    dataset: Path,
    run_dir: Path,
    config: TrainConfig,
    resume: bool,
    dist: Dist,
    regions: Regions | None = None,
    on_progress=None,
) -> VolumeData:
    """Read the volume folder, take the split of cases (the run's own on --resume), check the
    training and validation cases, and cache them (``RUN/cache`` or ``--cache``).

    Raises:
        SegtoolError: bad cases or split, or a batch larger than the training slices.
    """
    volumes = read_volume_dataset(dataset)
    names = sorted(c.case for c in volumes.cases)
    if resume:
        split = RunFolder(run_dir).split(set(names), required=True)
    else:
        split = config_split(dataset, names, config)
    by_case = volumes.by_case
    train_cases = [by_case[c] for c in split["train"]]
    val_cases = [by_case[c] for c in split["val"]]
    cache = cache_folder(config, run_dir, train_cases + val_cases, dist)
    if dist.main:
        check_cases(volumes, train_cases + val_cases)
    per_machine = dist.machines > 1 and not config.cache
    if dist.main or (per_machine and dist.local_rank == 0):
        build_cache(volumes, train_cases + val_cases, cache, config.axis, on_progress)
    barrier(dist)  # the other processes open what their machine's first process wrote
    cached = build_cache(volumes, train_cases + val_cases, cache, config.axis)
    train, val = cached[: len(train_cases)], cached[len(train_cases) :]
    slices = sum(len(v.label) for v in train)
    if config.batch_size > slices:
        raise SegtoolError(
            f"--batch-size {config.batch_size} is larger than the {slices} training slices; "
            f"use --batch-size {slices} or less"
        )
    return VolumeData(volumes, split, train, val, regions)


def volume_datasets(
    config: TrainConfig, class_map: ClassMap, data: VolumeData
) -> tuple[VolumeSliceDataset, VolumeSliceDataset]:
    """Training slices (crops, foreground oversampling, geometric augmentation) and
    validation slices (whole, in case order)."""
    augment, on_device = augmentations(
        config.augment, config.augment_on, class_map.ignore_index, config.seed,
        geometric_only=True,
    )  # fmt: skip
    train = VolumeSliceDataset(
        data.train,
        class_map,
        crop=config.crop,
        fg_crop=config.fg_crop,
        augment=augment,
        seed=config.seed,
        regions=data.regions,
        on_device=on_device,
    )
    val = VolumeSliceDataset(data.val, class_map, regions=data.regions)
    return train, val


def sum_cases(
    per_case: dict[str, Counts], cases: list[str], k: int, device: torch.device, dist: Dist
) -> list[Counts]:
    """Each validation case's counts in `cases` order, summed over processes (under torchrun
    a case's slices are spread over them)."""
    zero = np.zeros(k, dtype=np.int64)
    rows = [per_case.get(c, Counts(zero, zero, zero)).padded(k) for c in cases]
    if dist.world == 1:
        return rows
    packed = torch.tensor(
        np.array([np.concatenate(r.astuple()) for r in rows]), dtype=torch.float64
    )
    if torch.distributed.get_backend() == "nccl":
        packed = packed.to(device)
    torch.distributed.all_reduce(packed)
    table = packed.cpu().numpy().astype(np.int64)
    return [Counts(r[:k], r[k : 2 * k], r[2 * k :]) for r in table]


def volume_scores(per_case: list[Counts], class_map: ClassMap) -> dict[str, Any]:
    """Mean over cases of each case's 3-D Dice/IoU, per foreground class and their mean."""
    d, j = case_mean(per_case, dice), case_mean(per_case, iou)
    return {
        "dice": nanmean(d[1:]),
        "iou": nanmean(j[1:]),
        "per_class": {name: float(d[c]) for c, name in enumerate(class_map.names) if c},
        "per_class_iou": {name: float(j[c]) for c, name in enumerate(class_map.names) if c},
    }
