"""Per-class probability thresholds of a multi-label model, tuned on the validation split.

Each class is its own binary problem, so each gets the cut (from a fixed grid) that maximises
its validation Dice, computed from TP/FP/FN counts by the metrics module. The run keeps them
in ``thresholds.json``; ``segtool predict`` uses them and says so.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segtool.core.classes import ClassMap
from segtool.core.device import autocast
from segtool.core.metrics import Counts, dice
from segtool.train.build import Run, TrainingData, validation_dataset
from segtool.train.config import TrainConfig
from segtool.train.data import to_model_input, to_model_target
from segtool.train.loaders import make_loader
from segtool.train.model import load_model
from segtool.train.runfolder import RunFolder
from segtool.train.volume_data import VolumeData, volume_datasets

#: The cuts tried: 0.05, 0.10, ..., 0.95.
GRID = np.round(np.arange(1, 20) * 0.05, 2)


@torch.no_grad()
def validation_loader(
    config: TrainConfig, class_map: ClassMap, data: TrainingData, run: Run
) -> DataLoader:
    """Every validation image in this process (not split across torchrun's processes)."""
    dataset: Dataset = (
        volume_datasets(config, class_map, data)[1]
        if isinstance(data, VolumeData)
        else validation_dataset(config, class_map, data)
    )
    hardware = run.hardware
    return make_loader(dataset, config, hardware.device, hardware.workers, class_map.ignore_index)


def tune_thresholds(
    model: nn.Module,
    loader: DataLoader,
    class_map: ClassMap,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """The cut in `GRID` with the highest validation Dice for each class.

    Ties go to the cut closest to 0.5; a class absent from every reference and prediction
    (Dice NaN at every cut) keeps 0.5.

    Returns:
        The ``thresholds.json`` document: ``thresholds``, ``val_dice`` (at each class's cut)
        and ``val_dice_at_0.5``, by class name, and ``tuned_on``.
    """
    model.eval()
    channels = class_map.num_foreground
    grid = torch.as_tensor(GRID, dtype=torch.float32, device=device)
    tp, fp, fn = (torch.zeros(channels, len(GRID), dtype=torch.int64, device=device) for _ in "abc")
    bits = torch.arange(channels, device=device)
    for batch in loader:
        images = to_model_input(batch["image"], device)
        masks = to_model_target(batch["mask"], device)
        with autocast(device, amp_dtype):
            probs = torch.sigmoid(model(images).float())
        valid = (masks & class_map.ignore_index) == 0  # (N, H, W)
        truth = ((masks[:, None] >> bits[None, :, None, None]) & 1).bool()
        p = probs.permute(1, 0, 2, 3)[:, valid]  # (C, P)
        g = truth.permute(1, 0, 2, 3)[:, valid]
        above = p[:, None, :] > grid[None, :, None]  # (C, T, P)
        hit = (above & g[:, None, :]).sum(dim=2)
        tp += hit
        fp += above.sum(dim=2) - hit
        fn += g.sum(dim=1, keepdim=True) - hit
    scores = np.stack(
        [
            dice(Counts(*(np.concatenate([[0], t[:, j].cpu().numpy()]) for t in (tp, fp, fn))))[1:]
            for j in range(len(GRID))
        ],
        axis=1,
    )  # (C, T)
    half = int(np.argmin(np.abs(GRID - 0.5)))
    order = np.argsort(np.abs(GRID - 0.5), kind="stable")  # 0.5 first, then outwards
    names = class_map.names[1:]
    chosen = {}
    for c, name in enumerate(names):
        row = scores[c]
        if np.all(np.isnan(row)):
            chosen[name] = half
            continue
        best = np.nanmax(row)
        chosen[name] = next(int(j) for j in order if row[j] == best)
    return {
        "tuned_on": "val",
        "thresholds": {name: float(GRID[j]) for name, j in chosen.items()},
        "val_dice": {name: _clean(scores[c, chosen[name]]) for c, name in enumerate(names)},
        "val_dice_at_0.5": {name: _clean(scores[c, half]) for c, name in enumerate(names)},
    }


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def tune_best_model(
    folder: RunFolder,
    config: TrainConfig,
    class_map: ClassMap,
    data: TrainingData,
    run: Run,
    finished: bool,
) -> dict | None:
    """A multi-label run's per-class thresholds.json, which belongs to the best model: tuned
    again on the validation split (with --tune-thresholds, when the run finished), or dropped
    because the best model may have changed."""
    folder.write_thresholds(None)
    if not (config.tune_thresholds and finished):
        return None
    device = run.hardware.device
    best_model = load_model(folder.model_dir).to(device)
    loader = validation_loader(config, class_map, data, run)
    thresholds = tune_thresholds(
        best_model, loader, class_map, device, amp_dtype=run.hardware.amp_dtype
    )
    folder.write_thresholds(thresholds)
    return thresholds
