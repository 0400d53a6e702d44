"""HD95 in millimetres on volumes: MONAI's ``compute_hausdorff_distance(percentile=95,
spacing=...)`` (what ``HausdorffDistanceMetric`` calls) versus segtool's ``hd95``, on the
same anisotropic volumes, in this process, one after the other; the values are compared too.

Volumes: brain-MRI-like tumour labels (a few ellipsoids) and predictions made from them by
growing or shrinking and adding small false-positive blobs, or (``--noise``) by flipping a
fraction of all voxels (stray voxels everywhere: the hardest case for a surface search).

    python benchmarks/bench_hd95_3d.py [--cases 6] [--shape 160 160 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.distances import hd95


def ellipsoids(rng: np.random.Generator, shape: tuple, n: int, big: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    mask = np.zeros(shape, bool)
    for _ in range(n):
        centre = rng.uniform(np.array(shape) * 0.25, np.array(shape) * 0.75)
        radii = rng.uniform(2, big, 3) * np.array([1, 1, shape[2] / shape[0]])
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
    return mask


def make_cases(n: int, shape: tuple, noise: float, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        ref = ellipsoids(rng, shape, 3, shape[0] / 6)
        if noise:
            pred = ref ^ (rng.random(shape) < noise)
        else:
            op = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
            pred = op(ref, iterations=int(rng.integers(1, 3))) | ellipsoids(rng, shape, 2, 3)
        spacing = tuple(float(s) for s in rng.uniform([0.7, 0.7, 1.0], [1.2, 1.2, 5.0]))
        cases.append((ref, pred, spacing))
    return cases


def monai_hd95(ref: np.ndarray, pred: np.ndarray, spacing: tuple) -> float:
    from monai.metrics import compute_hausdorff_distance

    out = compute_hausdorff_distance(
        torch.from_numpy(pred[None, None]),
        torch.from_numpy(ref[None, None]),
        include_background=True,
        percentile=95,
        spacing=list(spacing),
    )
    return float(out[0, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 160, 96])
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cases = make_cases(args.cases, tuple(args.shape), args.noise)
    monai_hd95(*cases[0])  # imports and first-call costs out of the timing
    hd95(*cases[0])
    worst = 0.0
    ratios = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        theirs = [monai_hd95(*c) for c in cases]
        mid = time.perf_counter()
        ours = [hd95(*c) for c in cases]
        end = time.perf_counter()
        worst = max(worst, max(abs(a - b) / b for a, b in zip(ours, theirs, strict=True)))
        ratios.append((mid - start) / (end - mid))
        print(f"MONAI {mid - start:.3f}s  segtool {end - mid:.3f}s  ratio {ratios[-1]:.1f}x")
    print(
        f"{args.cases} cases {tuple(args.shape)} noise {args.noise}: segtool is "
        f"{min(ratios):.1f}-{max(ratios):.1f}x faster; largest relative difference {worst:.1e}"
    )


if __name__ == "__main__":
    main()
