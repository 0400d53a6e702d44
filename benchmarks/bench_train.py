"""segtool train against an expert's bare PyTorch loop: same model, batch size, images, loss.

segtool trains as a user runs it: its plan chooses the batch size and the augmentation (its
real default), its DataLoader reads the files, and it validates and checkpoints as it goes.
The bare loop is what an expert writes (see `benchmarks/expert.py`): the training images decoded once
into pinned uint8 memory, non-blocking copies through pinned buffers, normalisation on the
device, bf16 autocast, channels_last, cudnn.benchmark and fused AdamW on CUDA, the same loss
and gradient clipping, no read of the loss inside the timed steps. Both report the time to
their first step apart from their steady rate (training images per second from the
`--warmup`-th step to the last; segtool's includes its epoch ends: validation, checkpoints).

    python benchmarks/bench_train.py [--images N] [--size S] [--epochs E] [--device cuda]

Defaults measure steady state: 1,000 images of 512x512 for 3 epochs with a resnet34 U-Net on
a GPU; 192 images of 128x128 for 2 epochs with the CPU plan's model on a CPU (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.expert import (
    PinnedRing,
    Rate,
    bf16,
    expert_model,
    model_input,
    normaliser,
    now,
    read_uint8,
    steady_rate,
    synchronize,
)
from segtool.core.classes import mode_for, read_classes_json
from segtool.core.dataset import find_pairs
from segtool.train.config import TrainConfig
from segtool.train.loop import fit
from segtool.train.losses import build_loss
from segtool.train.model import build_model
from segtool.train.steps import SYNC_EVERY, Reporter
from tests.synthetic import make_dataset

#: Steps left out of the steady rate (allocation, cudnn.benchmark's search, worker start).
WARMUP = 2 * SYNC_EVERY


class Steps(Reporter):
    """Marks `fit`'s training steps: (time, steps done), at every `SYNC_EVERY`-th step and
    each epoch's last, where the loss was read (the device synchronised)."""

    def __init__(self) -> None:
        self.started = now()
        self.first = 0.0
        self.marks: list[tuple[float, int]] = []
        self.epochs: list[int] = []  #: each mark's epoch (the steps before it)
        self.done = self.before = self.epoch_steps = 0

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch_steps, self.before = batches, self.done

    def batch(self, done: int, loss: float, images_per_second: float) -> None:
        self.done = self.before + done
        if self.done == 1:
            self.first = now() - self.started
        if done % SYNC_EVERY == 0 or done == self.epoch_steps:
            self.marks.append((now(), self.done))
            self.epochs.append(self.before)


def segtool_train(dataset: Path, run: Path, epochs: int, options: dict) -> tuple[Rate, TrainConfig]:
    """`fit` as a user runs it; its rate, and the config it planned."""
    steps = Steps()
    fit(dataset, run, epochs=epochs, reporter=steps, **options)
    total = now() - steps.started
    config = TrainConfig.from_json(json.loads((run / "config.json").read_text())["options"])
    batch = config.batch_size
    steady, images = steady_rate([(t, n * batch) for t, n in steps.marks], WARMUP * batch)
    rate = Rate(steps.first, steady, images)
    rate.total = total  # type: ignore[attr-defined]
    rate.steps_only = steps_only(steps, batch)  # type: ignore[attr-defined]
    return rate, config


def steps_only(steps: Steps, batch: int) -> float:
    """Images per second within the epochs (their ends left out: validation, checkpoints),
    past the warm-up."""
    images = seconds = 0.0
    for epoch in sorted(set(steps.epochs)):
        marks = [m for m, e in zip(steps.marks, steps.epochs, strict=True) if e == epoch]
        marks = [m for m in marks if m[1] >= WARMUP] or marks[-1:]
        images += (marks[-1][1] - marks[0][1]) * batch
        seconds += marks[-1][0] - marks[0][0]
    return images / seconds if seconds else float("nan")


def expert_train(dataset: Path, config: TrainConfig, device: torch.device, steps: int) -> Rate:
    """The bare loop over the training split for `steps` steps of the planned batch size."""
    cmap = read_classes_json(dataset / "classes.json")
    train = set(json.loads((dataset / "split.json").read_text())["train"])
    pairs = [p for p in find_pairs(dataset)[0] if p.stem in train]
    images, masks = read_uint8([p.image for p in pairs], [p.mask for p in pairs])
    start = now()
    torch.manual_seed(config.seed)
    net = build_model(config.arch, config.encoder, None, cmap.num_classes,
                      decoder_channels=config.decoder_channels)  # fmt: skip
    net = expert_model(net, device)
    params = list(net.parameters())
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=cuda or None, foreach=None if cuda else True)  # fmt: skip
    loss_fn = build_loss(config.loss, mode_for(cmap.num_classes), cmap.ignore_index)
    stats, ring, batch = normaliser(device), PinnedRing(device), config.batch_size
    marks, first, order = [], 0.0, torch.randperm(len(images))
    net.train()
    for step in range(steps):
        at = (step * batch) % max(len(images) - batch + 1, 1)
        idx = order[at : at + batch]
        on_device = ring.upload(image=images[idx], mask=masks[idx])
        with bf16(device):
            loss = loss_fn(net(model_input(on_device["image"], stats)), on_device["mask"].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip_grad, foreach=True)
        optimizer.step()
        if step == 0 or (step + 1) % SYNC_EVERY == 0 or step == steps - 1:
            synchronize(device)  # marks only; the steps between read nothing
            marks.append((now(), (step + 1) * batch))
            first = first or now() - start
    steady, n = steady_rate(marks, WARMUP * batch)
    return Rate(first, steady, n)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both sides and print the rates and their ratio; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default=None, help="default: resnet34 on CUDA, else planned")
    args = parser.parse_args(argv)
    from segtool.core.device import pick_device

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    n = args.images or (1000 if gpu else 192)
    size = args.size or (512 if gpu else 128)
    epochs = args.epochs or (3 if gpu else 2)
    encoder = args.encoder or ("resnet34" if gpu else None)
    options = {"device": args.device, **({"encoder": encoder} if encoder else {})}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "ds", n=n, size=size)
        ours, config = segtool_train(dataset, Path(tmp) / "run", epochs, options)
        steps = max(ours.images // config.batch_size, 1) + WARMUP + 1
        bare = expert_train(dataset, config, device, steps)
    ratio = ours.steady / bare.steady
    print(
        f"{n} images {size}x{size}, {epochs} epochs, batch {config.batch_size} (planned), unet "
        f"{config.encoder}, augment {config.augment} (planned), {device}:"
    )
    print(f"  expert bare loop  {bare.text()}")
    print(f"  segtool train     {ours.text()}; whole run {ours.total:.1f} s")  # type: ignore[attr-defined]
    alone = ours.steps_only / bare.steady  # type: ignore[attr-defined]
    alone_text = f"{alone:.2f}x" if math.isfinite(alone) else "too few steps to tell"
    print(
        f"  segtool / bare: {ratio:.2f}x the steady rate (training steps alone, epoch ends "
        f"left out: {alone_text})"
    )
    return {"bare": bare, "segtool": ours, "ratio": ratio, "config": config}


if __name__ == "__main__":
    main()
