"""What an expert's bare PyTorch loop does, shared by bench_train, bench_predict and gpu_check.

The baseline segtool is measured against is the loop a careful engineer writes by hand, not a
naive one: the images decoded once and held in pinned uint8 memory (NHWC, so the float batch
is channels_last for free), copied to the device without blocking through a ring of pinned
buffers, normalised there with constants made on the device once, bf16 autocast and
channels_last on CUDA, ``cudnn.benchmark``, fused AdamW, and no read of a device value inside
the timed steps. Each side reports its time to first output apart from its steady-state rate
(images per second after a warm-up, the device synchronised at both ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: ImageNet statistics in 0..255 units (as segtool's ``normalize="imagenet"``).
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class Rate:
    """One side of a benchmark: seconds to the first output and the steady-state rate."""

    first_seconds: float
    steady: float  #: images per second after the warm-up
    images: int  #: images timed in steady state

    def text(self) -> str:
        """``12.3 img/s steady (480 images), first output after 1.23 s``."""
        return (
            f"{self.steady:8.1f} img/s steady ({self.images} images), first output after "
            f"{self.first_seconds:.2f} s"
        )


def synchronize(device: torch.device) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_rate(marks: list[tuple[float, int]], warmup: int) -> tuple[float, int]:
    """Images per second from the first of `marks` ((time, images done) pairs, taken where
    the device was synchronised) with at least `warmup` images done, to the last; and the
    images counted (the rate over all marks when too few)."""
    start = next((i for i, (_, n) in enumerate(marks) if n >= warmup), 0)
    start = min(start, max(len(marks) - 2, 0))
    (t0, n0), (t1, n1) = marks[start], marks[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9), n1 - n0


def read_uint8(paths: list[Path], masks: list[Path] | None = None) -> tuple[torch.Tensor, ...]:
    """Images (N, H, W, 3) and masks (N, H, W) decoded once into uint8 tensors, pinned when a
    GPU is present; all of one size."""
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]))
    out = [images]
    if masks is not None:
        out.append(torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in masks])))
    if torch.cuda.is_available():
        out = [t.pin_memory() for t in out]
    return tuple(out)


class PinnedRing:
    """`n` pinned host buffers a batch is gathered into before its non-blocking copy; a
    buffer is reused only once the copy out of it has finished (an event per buffer)."""

    def __init__(self, device: torch.device, n: int = 3) -> None:
        self.device, self.n, self.i = device, n, 0
        self.buffers: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
        cuda = device.type == "cuda"
        self.events = [torch.cuda.Event() if cuda else None for _ in range(n)]

    def upload(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each of `tensors` gathered into a pinned buffer and copied to the device."""
        slot, event = self.buffers[self.i], self.events[self.i]
        if event is not None:
            event.synchronize()
        out = {}
        for name, t in tensors.items():
            buf = slot.get(name)
            if buf is None or buf.shape != t.shape:
                buf = slot[name] = torch.empty_like(t, pin_memory=self.device.type == "cuda")
            buf.copy_(t)
            out[name] = buf.to(self.device, non_blocking=True)
        if event is not None:
            event.record()
        self.i = (self.i + 1) % self.n
        return out


def normaliser(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation as (1, 3, 1, 1) float tensors on `device`, made once."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(STD, device=device).view(1, 3, 1, 1)


def model_input(nhwc: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A uint8 NHWC batch on the device as a normalised float batch in channels_last (the
    permuted NHWC storage is channels_last already)."""
    return (nhwc.permute(0, 3, 1, 2).float() - stats[0]) / stats[1]


def bf16(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; off elsewhere (as segtool's default)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def expert_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` on `device`, channels_last on CUDA, with ``cudnn.benchmark`` on."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model


def now() -> float:
    """The benchmarks' clock."""
    return time.perf_counter()
