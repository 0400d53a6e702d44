"""segtool train against a bare PyTorch loop, same model, batch size, images and steps.

The bare loop holds every image and mask as tensors in memory and only runs forward, loss,
backward and the optimizer step. segtool train reads the files through its DataLoader and also
validates, checkpoints and redraws its curves every epoch; the ratio of the two wall times is
segtool's overhead. The DataLoader alone (no model) shows how far ahead of the model the
loading runs.

    python benchmarks/bench_train.py [--images 320] [--size 128] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.classes import mode_for, read_classes_json
from segtool.core.dataset import find_pairs
from segtool.train.build import default_workers
from segtool.train.config import parse_channels
from segtool.train.data import SegmentationDataset, pad_collate, to_model_input
from segtool.train.loop import fit
from segtool.train.losses import build_loss
from segtool.train.steps import Reporter
from tests.synthetic import make_dataset

MODEL = {"encoder": "tu-resnet10t", "decoder_channels": "64,32,16,16,16"}
BATCH = 8


class Clock(Reporter):
    """Records when each epoch's training steps start and end."""

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self._start = 0.0

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self._start = time.perf_counter()

    def batch(self, done: int, loss: float, images_per_second: float) -> None:
        self._last = time.perf_counter()

    def epoch_end(self, row: dict) -> None:
        self.train_seconds += self._last - self._start


def bare_loop(dataset: Path, epochs: int, device: torch.device) -> tuple[float, int]:
    """Forward/backward/step over in-memory tensors (on the device already); returns
    (seconds, images). On CUDA: bf16 autocast and channels-last, as segtool train uses."""
    from segtool.core.device import amp_dtype_for
    from segtool.train.model import build_model

    cmap = read_classes_json(dataset / "classes.json")
    pairs, _ = find_pairs(dataset)
    train = set(json.loads((dataset / "split.json").read_text())["train"])
    items = [item for item in SegmentationDataset([p for p in pairs if p.stem in train], cmap)]
    images = to_model_input(torch.stack([i["image"] for i in items]), device)
    masks = torch.stack([i["mask"] for i in items]).to(device)
    torch.manual_seed(0)
    model = build_model(
        "unet",
        MODEL["encoder"],
        None,
        cmap.num_classes,
        decoder_channels=parse_channels(MODEL["decoder_channels"]),
    ).to(device)
    amp = amp_dtype_for(device, None)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = build_loss("bce-dice", mode_for(cmap.num_classes), cmap.ignore_index)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH].to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = loss_fn(model(images[idx]), masks[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, seen


def loader_alone(dataset: Path, workers: int) -> float:
    """Images per second of segtool's training DataLoader with no model."""
    from torch.utils.data import DataLoader

    cmap = read_classes_json(dataset / "classes.json")
    pairs, _ = find_pairs(dataset)
    ds = SegmentationDataset(pairs, cmap, size=None)
    loader = DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        collate_fn=partial(pad_collate, ignore_index=cmap.ignore_index),
    )
    start = time.perf_counter()
    n = sum(len(batch["image"]) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the three measurements and print the ratios."""
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default=MODEL["encoder"])
    parser.add_argument("--decoder-channels", default=MODEL["decoder_channels"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    BATCH = args.batch
    MODEL.update(encoder=args.encoder, decoder_channels=args.decoder_channels or None)
    from segtool.core.device import pick_device

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "ds", n=args.images + 16, size=args.size)
        bare_s, images = bare_loop(dataset, args.epochs, device)
        clock = Clock()
        start = time.perf_counter()
        fit(
            dataset,
            Path(tmp) / "run",
            epochs=args.epochs,
            batch_size=BATCH,
            augment="none",
            loss="bce-dice",
            lr=1e-3,
            reporter=clock,
            **MODEL,
        )
        fit_s = time.perf_counter() - start
        workers = args.workers if args.workers is not None else default_workers(device)
        loader_ips = loader_alone(dataset, workers)
    model_ips = images / bare_s
    print(
        f"{images} training images ({args.epochs} epochs of {images // args.epochs}), "
        f"{args.size}x{args.size}, batch {BATCH}, unet {MODEL['encoder']}, {device}:"
    )
    print(f"  bare PyTorch loop over in-memory tensors  {bare_s:6.2f}s  ({model_ips:.1f} img/s)")
    print(
        f"  segtool train, training steps only       {clock.train_seconds:6.2f}s  "
        f"ratio {clock.train_seconds / bare_s:.2f}x"
    )
    print(
        f"  segtool train, whole run (with validation, checkpoints, curves) {fit_s:6.2f}s  "
        f"ratio {fit_s / bare_s:.2f}x"
    )
    print(
        f"  DataLoader alone ({workers} workers): {loader_ips:.0f} img/s = "
        f"{loader_ips / model_ips:.1f}x what the model consumes"
    )


if __name__ == "__main__":
    main()
