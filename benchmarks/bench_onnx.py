"""segtool predict on the CPU: onnxruntime (an export of the run) against eager PyTorch.

The script makes a dataset of small images, trains a real segtool run on it (a small encoder,
one epoch), exports it to ONNX (the export's own parity check runs), then predicts the same
images with both backends through the same `predict_dir` (reading, padding, writing
included), checks that the masks are the same and prints the ratio. Both backends use the
same number of threads (``OMP_NUM_THREADS``, else the cores).

    python benchmarks/bench_onnx.py [--images 300] [--size 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.classes import make_class_map
from segtool.core.masks import read_mask, write_mask
from segtool.export.folder import export_model
from segtool.predict.folder import predict_dir
from segtool.train.loop import fit


def make_dataset(root: Path, n: int, size: int) -> Path:
    """Squares (class 1) and discs (class 2) on noise, with a split (last fifth for val)."""
    import json

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cmap = make_class_map(["_background_", "square", "disc"])
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        x, y = rng.integers(2, size - size // 3, 2)
        draw.rectangle([x, y, x + size // 4, y + size // 4], fill=1)
        cx, cy = rng.integers(size // 8, size - size // 8, 2)
        draw.ellipse([cx - size // 8, cy - size // 8, cx + size // 8, cy + size // 8], fill=2)
        m = np.asarray(mask)
        base = rng.normal(110, 20, (size, size, 3))
        base[m == 1] += 100
        base[m == 2] -= 80
        pixels = np.clip(base, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"s{i:03d}.png")
        write_mask(root / "masks" / f"s{i:03d}.png", m, cmap)
    cmap.save(root / "classes.json")
    stems = [f"s{i:03d}" for i in range(n)]
    cut = n - n // 5
    split = {"seed": 0, "train": stems[:cut], "val": stems[cut:], "test": []}
    (root / "split.json").write_text(json.dumps(split))
    return root


def timed(runs: list[tuple[Path, Path, str]], images: Path, repeats: int) -> list[float]:
    """The best of `repeats` predict_dir runs (seconds) of each (model, out, backend), taken
    in turn so that each backend sees the same load from other programs."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, (model, out, backend) in enumerate(runs):
            start = time.perf_counter()
            predict_dir(model, images, out, device="cpu", backend=backend, overwrite=True)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    """Train, export, predict with both backends, compare and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--encoder", default="tu-resnet10t")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = make_dataset(root / "ds", args.images, args.size)
        fit(dataset, root / "run", epochs=1, encoder=args.encoder, workers=0, batch_size=8,
            augment="none", device="cpu")  # fmt: skip
        report = export_model(root / "run", root / "exported")
        p = report.parity
        print(
            f"export: parity on {p.images} val images: max |logit difference| "
            f"{p.max_logit_diff:.2g}, {p.differing} of {p.pixels} pixels differ"
        )
        images = dataset / "images"
        eager, ort = timed(
            [(root / "run", root / "torch", "torch"),
             (root / "exported", root / "ort", "onnxruntime")],
            images,
            args.repeats,
        )  # fmt: skip
        differing = total = 0
        for path in sorted((root / "torch").glob("*.png")):
            a, b = read_mask(path), read_mask(root / "ort" / path.name)
            differing += int((a != b).sum())
            total += a.size
        n = args.images
        print(
            f"{n} images {args.size}x{args.size}, {args.encoder}, CPU, "
            f"{torch.get_num_threads()} thread(s), best of {args.repeats} (taken in turn), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  eager PyTorch : {eager:6.2f} s ({n / eager:6.1f} images/s)")
        print(f"  onnxruntime   : {ort:6.2f} s ({n / ort:6.1f} images/s)")
        print(f"  ratio         : onnxruntime is {eager / ort:.2f}x the speed of eager PyTorch")
        print(f"  same masks    : {differing} of {total} pixels differ ({differing / total:.5%})")


if __name__ == "__main__":
    main()
