"""Limits checked before any work: what one training batch needs, and whether a time budget
fits one epoch.

A ``--size`` or ``--crop`` far beyond what the machine holds is otherwise found by the kernel's
out-of-memory killer minutes later (a killed process cleans nothing up), and a budget shorter
than one epoch is overrun in silence. The memory figure is a lower bound (the input, the
mask, the logits and the decoder's full-resolution features with their gradients; the
encoder needs more on top), so a refusal is certain to be right, never a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from segtool.core.errors import SegtoolError
from segtool.core.limits import available_ram, max_pixels

if TYPE_CHECKING:
    from segtool.train.config import TrainConfig


class StepTimes(Protocol):
    """Seconds measured for one configuration (`segtool.train.plan.Timing` has them)."""

    step: float
    steps_per_epoch: int
    validation: float
    fixed: float


#: Bytes per pixel and per decoder feature channel at full resolution kept for the backward
#: pass: the convolution's output, the normalised and the activated tensor (float32 each).
FEATURE_BYTES = 3 * 4
#: The decoder's last (full-resolution) width when the model is built with smp's default.
DEFAULT_DECODER_LAST = 16
#: Bytes per pixel of the mask a loss reads (int64 class ids).
MASK_BYTES = 8


def sample_shape(config: TrainConfig) -> tuple[tuple[int, int], str] | None:
    """(height, width) of one training sample and the option that sets it, when one does."""
    from segtool.train.geometry import parse_size

    if config.crop:
        return (config.crop, config.crop), f"--crop {config.crop}"
    size = parse_size(config.size)
    if size is None:
        return None
    height, width = size
    return size, f"--size {height}" if height == width else f"--size {height},{width}"


def batch_bytes(height: int, width: int, batch: int, in_channels: int, decoder_last: int) -> int:
    """A lower bound on the memory one training step of `batch` samples holds: the input
    (float32 per channel), the mask and the decoder's full-resolution features."""
    per_pixel = 4 * in_channels + MASK_BYTES + FEATURE_BYTES * decoder_last
    return height * width * batch * per_pixel


def device_memory(device: str) -> tuple[int, str]:
    """(bytes, what they are) that a step on `device` can use: the GPU's memory, else the
    RAM free now. Reads properties only: no CUDA context is made here."""
    import torch

    from segtool.core.device import pick_device

    chosen = pick_device(device)
    if chosen.type == "cuda":
        return torch.cuda.get_device_properties(chosen).total_memory, "GPU memory"
    return available_ram(), "free memory"


def check_batch(config: TrainConfig, in_channels: int = 3) -> None:
    """Refuse, naming the option to change, a sample over --max-pixels or a batch whose
    memory (`batch_bytes`) exceeds the device's (`device_memory`).

    Raises:
        SegtoolError: the sample or the batch cannot fit.
    """
    from segtool.train.config import parse_channels

    shape = sample_shape(config)
    if shape is None:  # the planner picks the geometry, within the device's limits
        return
    (height, width), option = shape
    pixels, limit = height * width, max_pixels()
    if pixels > limit:
        raise SegtoolError(
            f"{option}: {height} x {width} = {pixels:,} pixels a sample is over the limit of "
            f"{limit:,}; give a smaller {option.split()[0]} (or raise --max-pixels if the "
            f"machine has the memory)"
        )
    channels = parse_channels(config.decoder_channels)
    last = channels[-1] if channels else DEFAULT_DECODER_LAST
    need = batch_bytes(height, width, config.batch_size, in_channels, last)
    have, what = device_memory(config.device)
    if need > have:
        fits = max(have // max(need // config.batch_size, 1), 0)
        fix = (
            f"use --batch-size {fits} or less"
            if fits >= 1
            else f"one sample does not fit: give a smaller {option.split()[0]}"
        )
        raise SegtoolError(
            f"{option} with --batch-size {config.batch_size}: one batch needs at least "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {what}; {fix}"
        )


def check_budget(timing: StepTimes, budget: float, epochs: int) -> None:
    """Refuse a time budget in which not even one epoch fits (`epochs` is how many do),
    saying how long one takes and how many steps the budget could run.

    Raises:
        SegtoolError: naming --time-budget, the time one epoch takes and the fix.
    """
    if epochs >= 1:
        return
    epoch = timing.step * timing.steps_per_epoch + timing.validation
    left = max(budget - timing.fixed, 0.0)
    steps = int(left // timing.step) if timing.step > 0 else 0
    need = timing.fixed + epoch
    raise SegtoolError(
        f"--time-budget {budget:g}s cannot fit one epoch: start-up and saving take "
        f"{timing.fixed:.1f} s and one epoch takes about {epoch:.1f} s ({timing.steps_per_epoch} steps of "
        f"{timing.step:.2f} s and validation); the budget leaves room for {steps} step(s). "
        f"Give --time-budget {need * 1.2:.0f}s or more, or pass --epochs instead"
    )
