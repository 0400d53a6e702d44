"""One epoch of training and one pass of validation, and the scores validation reports."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segtool.core.classes import ClassMap
from segtool.core.device import autocast
from segtool.core.errors import SegtoolError
from segtool.core.metrics import Counts, dice, iou, nanmean
from segtool.train.counting import DeviceCounter
from segtool.train.data import to_model_input, to_model_target
from segtool.train.model import bits_from_logits, labels_from_logits

if TYPE_CHECKING:
    from segtool.train.build import Run

#: Training steps between reads of the loss (each read waits for the device).
SYNC_EVERY = 10


class Reporter:
    """Receives progress from `fit`; the command line draws it, the library stays quiet."""

    def plan(self, choices: list[dict[str, Any]]) -> None:
        """Called once for a planned run, with each choice (option, value, why)."""

    def start(self, info: dict[str, Any]) -> None:
        """Called once, with the device, sizes and counts."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """Called before each epoch."""

    def phase(self, text: str) -> None:
        """Called as a slow phase begins (measuring the dataset, timing the first steps)."""

    def batch(self, done: int, loss: float, images_per_second: float) -> None:
        """Called after each training step, with the mean loss at its last read."""

    def epoch_end(self, row: dict[str, Any]) -> None:
        """Called after each epoch, with its metrics.csv row (after last.pt is written)."""


class NonFiniteLoss(SegtoolError):
    """The loss became NaN or infinite."""


def train_step(run: Run, batch: dict[str, Any], clip_grad: float | None = 1.0) -> torch.Tensor:
    """One optimiser step on `batch` (forward, loss, backward, clip, step, schedule).

    Returns:
        The batch's mean loss, still on the device (reading it waits for the device).
    """
    hardware, learner = run.hardware, run.learner
    images = to_model_input(batch["image"], hardware.device)
    masks = to_model_target(batch["mask"], hardware.device)
    if "augment" in batch and run.loaders.on_device is not None:  # training batches only
        images, masks = run.loaders.on_device(images, masks, batch["augment"])
    if hardware.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(hardware.device, hardware.amp_dtype):
        loss = learner.loss_fn(learner.train_model(images), masks)
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scaler.scale(loss).backward()
    if clip_grad:
        learner.scaler.unscale_(learner.optimizer)
        nn.utils.clip_grad_norm_(learner.train_model.parameters(), clip_grad)
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    learner.scheduler.step()
    return loss.detach()


@dataclass
class Tally:
    """An epoch's running training loss: the sum over its images so far (on the device, read
    only every `SYNC_EVERY` steps), the images and steps counted; a checkpoint saved within
    the epoch keeps it, so a resumed epoch reports the same mean loss."""

    total: torch.Tensor
    seen: int = 0
    steps: int = 0
    mean: float = 0.0  #: the mean loss at the last read

    @classmethod
    def start(cls, device: torch.device, saved: dict[str, Any] | None = None) -> Tally:
        """A new epoch's tally, or the one `saved` (`state`) within it."""
        saved = saved or {"loss_sum": 0.0, "seen": 0, "steps": 0}
        total = torch.zeros((), dtype=torch.float64, device=device)  # no copy from the host
        if saved["loss_sum"]:
            total += float(saved["loss_sum"])
        seen = int(saved["seen"])
        return cls(total, seen, int(saved["steps"]), float(saved["loss_sum"]) / max(seen, 1))

    def state(self) -> dict[str, Any]:
        """The tally as plain values (reading the loss waits for the device)."""
        return {"loss_sum": float(self.total), "seen": self.seen, "steps": self.steps}


def train_one_epoch(
    run: Run,
    loader: Iterable[dict[str, Any]],
    step: Callable[[dict[str, Any]], torch.Tensor] | None = None,
    *,
    reporter: Reporter | None = None,
    tally: Tally | None = None,
) -> float:
    """One pass over `loader`, `step` (default: `train_step`) on each batch; returns the
    mean training loss. `tally` continues an epoch begun before (its steps are not in
    `loader`); the loader may end early (a time budget cutting the epoch short).

    Raises:
        NonFiniteLoss: the loss became NaN or infinite (checked every `SYNC_EVERY` steps;
            the caller keeps the last checkpoint).
    """
    step = step or (lambda batch: train_step(run, batch))
    tally = tally or Tally.start(run.hardware.device)
    run.learner.train_model.train()
    start, seen_before = time.perf_counter(), tally.seen
    n_steps = len(loader)  # type: ignore[arg-type]
    for batch in loader:
        tally.total += step(batch) * len(batch["image"])
        tally.seen += len(batch["image"])
        tally.steps += 1
        # Reading the loss waits for the GPU; every SYNC_EVERY steps keeps its queue full.
        if tally.steps % SYNC_EVERY == 0 or tally.steps == n_steps:
            tally.mean = float(tally.total) / tally.seen
            if not math.isfinite(tally.mean):
                raise NonFiniteLoss(f"the loss became {tally.mean} by step {tally.steps}")
        if reporter:  # every step, with the loss last read: progress lines keep their interval
            speed = (tally.seen - seen_before) / max(time.perf_counter() - start, 1e-9)
            reporter.batch(tally.steps, tally.mean, speed)
    mean = float(tally.total) / max(tally.seen, 1)
    if not math.isfinite(mean):
        raise NonFiniteLoss(f"the loss became {mean} by step {tally.steps}")
    return mean


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    class_map: ClassMap,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    per_case: dict[str, Counts] | None = None,
) -> tuple[float, Counts, int]:
    """Loss and pooled TP/FP/FN counts over `loader` (the metrics module's counts, taken on
    the device by `DeviceCounter`).

    Everything adds up on the device and is read once, at the end: a pass waits for the
    device once, not once per batch. With `per_case` (volumes: an item's ``stem`` is its
    case), each item's counts are also added to ``per_case[stem]``, so a case is scored in
    3-D from all of its slices.

    Returns:
        (summed loss over images, pooled counts, number of images).
    """
    model.eval()
    k = class_map.num_classes
    counter = DeviceCounter(k, class_map.ignore_index, class_map.multilabel)
    pooled = torch.zeros(counter.width, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    cases: dict[str, torch.Tensor] = {}
    n = 0
    for batch in loader:
        images = to_model_input(batch["image"], device)
        masks = to_model_target(batch["mask"], device)
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = loss_fn(logits, masks)
        loss_sum += loss.detach().double() * len(images)
        n += len(images)
        predicted = (
            bits_from_logits(logits.float())
            if class_map.multilabel
            else labels_from_logits(logits.float(), k)
        )
        rows = counter.rows(masks, predicted)
        pooled += rows.sum(dim=0)
        if per_case is not None:
            for stem, row in zip(batch["stem"], rows, strict=True):
                cases[stem] = cases[stem] + row if stem in cases else row
    names = list(cases)
    table = torch.stack([pooled, *(cases[s] for s in names)])
    # The one read: the counts, exact as int64, with the loss's float64 bits beside them.
    values = torch.cat([table.view(-1), loss_sum.view(1).view(torch.int64)]).cpu().numpy()
    read = values[:-1].reshape(len(names) + 1, counter.width)
    for stem, row in zip(names, read[1:], strict=True):
        counts = counter.counts(row)
        per_case[stem] = per_case[stem] + counts if stem in per_case else counts
    return float(values[-1:].view(np.float64)[0]), counter.counts(read[0]), n


def scores(counts: Counts, class_map: ClassMap) -> dict[str, Any]:
    """Mean and per-class Dice/IoU over the foreground classes, as evaluate computes them."""
    d, j = dice(counts), iou(counts)
    return {
        "dice": nanmean(d[1:]),
        "iou": nanmean(j[1:]),
        "per_class": {name: float(d[c]) for c, name in enumerate(class_map.names) if c},
        "per_class_iou": {name: float(j[c]) for c, name in enumerate(class_map.names) if c},
    }
