"""segtool predict against a bare loop calling the same model on tensors already in memory.

The bare loop only runs the model and the argmax; segtool predict also reads, decodes and
pads every image and writes every PNG, in DataLoader workers and a writer thread. Then one
large image, whole versus in overlapping tiles.

    python benchmarks/bench_predict.py [--images 64] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.classes import make_class_map
from segtool.core.images import load_rgb
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.train.config import parse_channels
from segtool.train.data import normalize, to_model_input
from segtool.train.model import build_model, save_model

BATCH = 4


def main() -> None:
    """Measure and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--large", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for i in range(args.images):
            pixels = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"img{i:03d}.jpg", quality=90)
        cmap = make_class_map(["_background_", "a", "b"])
        cmap.save(root / "classes.json")
        torch.manual_seed(0)
        model = build_model(
            "unet", "tu-resnet10t", None, 3, decoder_channels=parse_channels("64,32,16,16,16")
        )
        save_model(model, root / "model")
        predictor = load_predictor(root / "model", root / "classes.json")

        inputs = [normalize(load_rgb(p), "imagenet") for p in sorted((root / "images").iterdir())]
        net = predictor.model.to(device)
        with torch.no_grad():
            net(to_model_input(torch.stack(inputs[:BATCH]), device))  # warm-up
            start = time.perf_counter()
            for i in range(0, len(inputs), BATCH):
                net(to_model_input(torch.stack(inputs[i : i + BATCH]), device)).argmax(1).cpu()
            bare_s = time.perf_counter() - start
        start = time.perf_counter()
        predict_dir(predictor, root / "images", root / "out", batch_size=BATCH, device=args.device)
        seg_s = time.perf_counter() - start
        print(
            f"{args.images} images {args.size}x{args.size}, unet tu-resnet10t, batch {BATCH}, {device}:"
        )
        print(f"  bare loop on in-memory tensors {bare_s:.2f}s ({args.images / bare_s:.1f} img/s)")
        print(
            f"  segtool predict (read, pad, predict, write PNGs) {seg_s:.2f}s "
            f"({args.images / seg_s:.1f} img/s) = {bare_s / seg_s:.2f}x the bare loop's speed"
        )

        large = normalize(
            rng.integers(0, 255, (args.large, args.large, 3), dtype=np.uint8), "imagenet"
        )
        whole = Engine(predictor, device)
        tiled = Engine(predictor, device, tile=256, overlap=0.25, batch_size=BATCH)
        start = time.perf_counter()
        a = whole.labels(whole.probabilities([large])[0])
        whole_s = time.perf_counter() - start
        start = time.perf_counter()
        b = tiled.labels(tiled.probabilities([large])[0])
        tiled_s = time.perf_counter() - start
        print(
            f"one {args.large}x{args.large} image: whole {whole_s:.2f}s, 256-px tiles with 25% "
            f"overlap {tiled_s:.2f}s ({tiled_s / whole_s:.2f}x), labels agree on "
            f"{(a == b).mean():.1%} of pixels (untrained model)"
        )


if __name__ == "__main__":
    main()
