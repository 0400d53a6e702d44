"""segtool predict against an expert's bare inference loop: same model, batch size and images.

segtool predicts a folder of JPEGs as a user runs it (`predict_dir`: read and decode, predict,
write palette PNGs). The bare loop is what an expert writes (see `benchmarks/expert.py`): the
images decoded once into pinned uint8 memory, non-blocking copies through pinned buffers,
normalisation on the device, inference_mode, bf16 autocast, channels_last and
cudnn.benchmark on CUDA, argmax on the logits, and one non-blocking download of each batch's
labels, waited for one batch later. Both report the time to the first output apart from the
steady rate (images per second from the `--warmup`-th image to the last). Then one large
image, whole versus in overlapping tiles.

    python benchmarks/bench_predict.py [--images N] [--size S] [--device cuda]

Defaults measure steady state: 2,000 JPEGs of 512x512 with a resnet34 U-Net on a GPU; 96 of
256x256 with the slim CPU model on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import expert
from segtool.core.classes import make_class_map
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.predict.spec import PredictSpec
from segtool.train.config import parse_channels
from segtool.train.data import normalize
from segtool.train.model import build_model, load_model, save_model

#: Images left out of the steady rate (allocation, cudnn.benchmark's search, worker start).
WARMUP_BATCHES = 4


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """`n` smooth random JPEGs (upsampled noise: they decode like photographs, not like
    white noise)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        paths.append(folder / f"img{i:05d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def expert_predict(
    model_dir: Path, paths: list[Path], device: torch.device, batch: int
) -> tuple[expert.Rate, torch.Tensor]:
    """The bare loop: labels of every image, each batch's download waited for a batch later;
    its rate and the labels (N, H, W) uint8."""
    (images,) = expert.read_uint8(paths)
    start = expert.now()
    net = expert.expert_model(load_model(model_dir), device).eval()
    stats, ring, cuda = expert.normaliser(device), expert.PinnedRing(device), device.type == "cuda"
    out = torch.empty(images.shape[:3], dtype=torch.uint8, pin_memory=cuda)
    marks, first, pending = [], 0.0, None
    with torch.inference_mode():
        for at in range(0, len(images), batch):
            x = ring.upload(image=images[at : at + batch])["image"]
            with expert.bf16(device):
                logits = net(expert.model_input(x, stats))
            labels = logits.argmax(1).to(torch.uint8)  # labels only: no softmax
            out[at : at + len(labels)].copy_(labels, non_blocking=True)
            done = torch.cuda.Event() if cuda else None
            if at == 0:
                expert.synchronize(device)
                first = expert.now() - start
            if done is None:  # on the CPU the labels are on the host already
                marks.append((expert.now(), at + len(labels)))
                continue
            done.record()
            if pending is not None:  # the batch before is on the host once its event is
                pending[0].synchronize()
                marks.append((expert.now(), pending[1]))
            pending = (done, at + len(labels))
    if pending is not None:
        pending[0].synchronize()
        marks.append((expert.now(), pending[1]))
    steady, n = expert.steady_rate(marks, WARMUP_BATCHES * batch)
    return expert.Rate(first, steady, n), out


def agreement(labels: torch.Tensor, paths: list[Path], out: Path) -> float:
    """The share of pixels where segtool's masks in `out` equal the bare loop's `labels`."""
    from segtool.core.constants import MASK_SUFFIX
    from segtool.core.masks import read_mask

    same = sum(int((read_mask(out / f"{p.stem}{MASK_SUFFIX}") == x.numpy()).sum()) for p, x in
               zip(paths, labels, strict=True))  # fmt: skip
    return same / labels.numel()


def segtool_predict(run: Path, images: Path, out: Path, device: str, batch: int) -> expert.Rate:
    """`predict_dir` as a user runs it, its progress marked."""
    marks: list[tuple[float, int]] = []
    start = expert.now()
    predictor = load_predictor(run / "model", run / "classes.json")
    predict_dir(predictor, images, out, batch_size=batch, device=device,
                on_progress=lambda what, done, total: done and marks.append((expert.now(), done)))  # fmt: skip
    steady, n = expert.steady_rate(marks, WARMUP_BATCHES * batch)
    return expert.Rate(marks[0][0] - start if marks else 0.0, steady, n)


def tiles_line(run: Path, device: torch.device, side: int) -> str:
    """One `side`-pixel image predicted whole and in 256-pixel tiles with 25 % overlap."""
    predictor = load_predictor(run / "model", run / "classes.json")
    rng = np.random.default_rng(1)
    large = normalize(rng.integers(0, 255, (side, side, 3), dtype=np.uint8), "imagenet")
    whole, tiled = (
        Engine(predictor, device),
        Engine(predictor, device, tile=256, overlap=0.25, batch_size=8),
    )
    start = expert.now()
    a = whole.labels(whole.probabilities([large])[0])
    whole_s, start = expert.now() - start, expert.now()
    b = tiled.labels(tiled.probabilities([large])[0])
    tiled_s = expert.now() - start
    return (
        f"one {side}x{side} image: whole {whole_s:.2f} s, 256-px tiles with 25% overlap "
        f"{tiled_s:.2f} s ({tiled_s / whole_s:.2f}x), labels agree on {(a == b).mean():.1%} of "
        f"pixels (untrained model)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both sides and print the rates and their ratio; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--large", type=int, default=1024, help="0: no tiling comparison")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from segtool.core.device import pick_device

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    n, size = args.images or (2000 if gpu else 96), args.size or (512 if gpu else 256)
    encoder, channels = ("resnet34", None) if gpu else ("tu-resnet10t", "64,32,16,16,16")
    batch = PredictSpec().batch_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_jpegs(root / "images", n, size)
        torch.manual_seed(0)
        model = build_model("unet", encoder, None, 3, decoder_channels=parse_channels(channels))
        save_model(model, root / "run" / "model")
        make_class_map(["_background_", "a", "b"]).save(root / "run" / "classes.json")
        ours = segtool_predict(root / "run", root / "images", root / "out", args.device, batch)
        bare, labels = expert_predict(root / "run" / "model", paths, device, batch)
        ratio = ours.steady / bare.steady
        agree = agreement(labels, paths, root / "out")
        print(f"{n} JPEGs {size}x{size}, unet {encoder}, batch {batch} (predict's), {device}:")
        print(f"  expert bare loop  {bare.text()}")
        print(f"  segtool predict   {ours.text()}")
        print(
            f"  segtool / bare: {ratio:.2f}x the steady rate; masks agree on {agree:.2%} of pixels"
        )
        if args.large:
            print(tiles_line(root / "run", device, args.large))
    return {"bare": bare, "segtool": ours, "ratio": ratio, "agreement": agree}


if __name__ == "__main__":
    main()
