"""segtool evaluate against the loops users write with torchmetrics and MONAI, on the same files.

1. Overlap metrics, whole processes: a script that reads each PNG pair and updates
   torchmetrics' ``DiceScore`` and ``MeanIoU`` versus ``segtool evaluate --no-hd95 --no-objects``
   (the same work: pixel scores and their intervals, no object-level scores).
2. HD95 on the same masks, in this process, one core each: MONAI's
   ``HausdorffDistanceMetric(percentile=95)`` on one-hot tensors versus segtool's
   ``hd95_per_class``; the values are compared too.

    python benchmarks/bench_evaluate.py [--pairs 200] [--size 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_whole import K, make_pairs
from segtool.core.masks import read_mask
from segtool.core.metrics import hd95_per_class

TORCHMETRICS_LOOP = """
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torchmetrics.segmentation import DiceScore, MeanIoU
pred_dir, ref_dir, k = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dice = DiceScore(num_classes=k, average="none", input_format="index")
miou = MeanIoU(num_classes=k, per_class=True, input_format="index")
for ref_path in sorted(ref_dir.glob("*.png")):
    ref = torch.from_numpy(np.array(Image.open(ref_path))).long()[None]
    pred = torch.from_numpy(np.array(Image.open(pred_dir / ref_path.name))).long()[None]
    dice.update(pred, ref)
    miou.update(pred, ref)
print("dice", dice.compute().numpy().round(4), "iou", miou.compute().numpy().round(4))
"""


def timed_run(args: list[str], repeats: int = 1) -> tuple[float, str]:
    """Best wall time over `repeats` runs of a whole process, and its stdout."""
    best, out = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True, check=True)
        best, out = min(best, time.perf_counter() - start), result.stdout
    return best, out


def monai_hd95(refs: list[np.ndarray], preds: list[np.ndarray]) -> np.ndarray:
    """HD95 per image and foreground class with MONAI, as its users call it."""
    import torch
    from monai.metrics import HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    metric = HausdorffDistanceMetric(percentile=95, include_background=False)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ref, pred in zip(refs, preds, strict=True):
            y = one_hot(torch.from_numpy(ref.astype(np.int64))[None, None], K)
            y_pred = one_hot(torch.from_numpy(pred.astype(np.int64))[None, None], K)
            out.append(metric(y_pred, y)[0].numpy())
    return np.array(out)


def main() -> None:
    """Run both comparisons and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--hd95-pairs", type=int, default=40)
    args = parser.parse_args()
    segtool = [sys.executable, "-m", "segtool"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pairs(root, args.pairs, args.size)
        gt, pred = str(root / "gt"), str(root / "pred")
        tm_s, tm_out = timed_run([sys.executable, "-c", TORCHMETRICS_LOOP, pred, gt, str(K)], 2)
        seg_s, _ = timed_run(
            [
                *segtool,
                "evaluate",
                pred,
                gt,
                "--no-hd95",
                "--no-objects",
                "--out",
                str(root / "r"),
                "--overwrite",
            ],
            3,
        )
        print(
            f"{args.pairs} pairs {args.size}x{args.size}, {K} classes, whole processes, best of 2 and 3 runs:"
        )
        print(f"  torchmetrics DiceScore+MeanIoU loop {tm_s:.2f}s ({tm_out.strip()})")
        print(f"  segtool evaluate --no-hd95 --no-objects {seg_s:.2f}s   ratio {tm_s / seg_s:.1f}x")

        names = sorted((root / "gt").glob("*.png"))[: args.hd95_pairs]
        refs = [read_mask(p) for p in names]
        preds = [read_mask(root / "pred" / p.name) for p in names]
        start = time.perf_counter()
        theirs = monai_hd95(refs, preds)
        monai_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = np.array(
            [hd95_per_class(r, p, list(range(1, K)), 255) for r, p in zip(refs, preds, strict=True)]
        )
        ours_s = time.perf_counter() - start
        both = np.isfinite(theirs) & np.isfinite(ours)
        diff = np.abs(theirs[both] - ours[both]).max()
        rel = (np.abs(theirs[both] - ours[both]) / np.maximum(np.abs(ours[both]), 1e-12)).max()
        print(f"HD95 on {len(names)} pairs, one core each:")
        print(f"  MONAI HausdorffDistanceMetric(percentile=95) {monai_s:.2f}s")
        ratio = monai_s / ours_s
        print(f"  segtool hd95_per_class                        {ours_s:.2f}s   ratio {ratio:.1f}x")
        print(
            f"  largest difference {diff:.2e} px (relative {rel:.1e}; MONAI returns float32) "
            f"over {both.sum()} image-class values"
        )


if __name__ == "__main__":
    main()
