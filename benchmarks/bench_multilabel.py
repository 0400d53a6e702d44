"""Multi-label masks against exclusive ones, on the same data, in one process.

1. rasterize: the rasterize benchmark's folders (1024 x 768 images, random polygons of four
   classes) as exclusive masks and with ``--multilabel``; the multi-label planes are checked
   to be the union of each class's shapes.
2. evaluate: the same blobs scored as exclusive label maps (later blobs cover earlier ones) and
   as multi-label masks (every blob kept), with and without HD95; same size, so the time
   ratio is the per-pixel ratio.

Runs alternate (exclusive, multi-label, exclusive, ...) so that load from other processes hits
both alike; each ratio is printed as the range over the repeats and the ratio of the bests.

    python benchmarks/bench_multilabel.py [--images 40] [--shapes 30 150] [--pairs 100] [--jobs 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_whole import LABELS, make_annotations
from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask
from segtool.core.multilabel import encode, read_multilabel_values, write_multilabel_mask
from segtool.evaluate.report import evaluate_dirs
from segtool.rasterize.folder import rasterize_dir

K = 5


def alternate(repeats: int, first, second) -> tuple[list[float], list[float]]:
    """Wall times of `first()` and `second()`, run alternately `repeats` times each."""
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return a, b


def describe(name: str, a: list[float], b: list[float]) -> str:
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return (
        f"{name}: exclusive best {min(a):.2f}s, multi-label best {min(b):.2f}s; multi-label / "
        f"exclusive {min(b) / min(a):.2f}x (pairwise {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


def bench_rasterize(
    tmp: Path, images: int, shapes: list[int], repeats: int, jobs: int | None
) -> None:
    labels = tmp / "labels.txt"
    labels.write_text("\n".join(["__ignore__", *LABELS]) + "\n")
    for n_shapes in shapes:
        folder = tmp / f"ann_{n_shapes}"
        make_annotations(folder, images, n_shapes)
        ex, ml = tmp / f"ex_{n_shapes}", tmp / f"ml_{n_shapes}"
        a, b = alternate(
            repeats,
            lambda f=folder, o=ex: rasterize_dir(f, o, labels=labels, overwrite=True, jobs=jobs),
            lambda f=folder, o=ml: rasterize_dir(
                f, o, labels=labels, overwrite=True, multilabel=True, jobs=jobs
            ),
        )
        # Every exclusive pixel's class is among the multi-label pixel's classes.
        for mask in sorted((ex / "masks").iterdir())[:5]:
            ids = np.asarray(Image.open(mask)).astype(np.int64)
            bits = read_multilabel_values(ml / "masks" / mask.name, len(LABELS)).astype(np.int64)
            fg = ids > 0
            if not np.all((bits[fg] >> (ids[fg] - 1)) & 1):
                raise SystemExit(f"MISMATCH in {mask.name}")
        where = f", --jobs {jobs}" if jobs else ""
        print(describe(f"rasterize, {images} images, {n_shapes} polygons each{where}", a, b))


def make_pairs(root: Path, n: int, size: int, seed: int = 0) -> None:
    """The same random blobs as exclusive label maps and as multi-label masks; predictions
    are shifted copies with a little noise (as in bench_evaluate)."""
    rng = np.random.default_rng(seed)
    names = ["_background_", *(f"c{i}" for i in range(1, K))]
    exclusive, multi = make_class_map(names), make_class_map(names, multilabel=True)
    for folder in ("ex/gt", "ex/pred", "ml/gt", "ml/pred"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        planes = np.zeros((K - 1, size, size), dtype=bool)
        labels = np.zeros((size, size), dtype=np.uint8)
        for _ in range(12):
            blob = Image.new("L", (size, size), 0)
            cx, cy, r = [*rng.uniform(0, size, 2).tolist(), rng.uniform(8, size / 6)]
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))))
            radii = r * rng.uniform(0.6, 1.0, len(angles))
            ImageDraw.Draw(blob).polygon(
                [
                    (cx + a * np.cos(t), cy + a * np.sin(t))
                    for a, t in zip(radii, angles, strict=True)
                ],
                fill=1,
            )
            c = int(rng.integers(1, K))
            inside = np.asarray(blob).astype(bool)
            planes[c - 1] |= inside
            labels[inside] = c
        shift = tuple(rng.integers(-3, 4, 2))
        noise = rng.random((size, size)) < 0.002
        pred_labels = np.roll(labels, shift, axis=(0, 1))
        pred_labels[noise] = rng.integers(0, K, noise.sum())
        pred_planes = np.roll(planes, shift, axis=(1, 2))
        pred_planes[:, noise] = rng.random((K - 1, noise.sum())) < 0.5
        write_mask(root / "ex/gt" / f"m{i:04d}.png", labels, exclusive)
        write_mask(root / "ex/pred" / f"m{i:04d}.png", pred_labels, exclusive)
        write_multilabel_mask(root / "ml/gt" / f"m{i:04d}.png", encode(planes))
        write_multilabel_mask(root / "ml/pred" / f"m{i:04d}.png", encode(pred_planes))
    exclusive.save(root / "ex" / "classes.json")
    multi.save(root / "ml" / "classes.json")


def bench_evaluate(tmp: Path, pairs: int, size: int, repeats: int) -> None:
    make_pairs(tmp / "eval", pairs, size)
    for hd95 in (False, True):

        def run(kind: str, hd95: bool = hd95) -> dict:
            root = tmp / "eval" / kind
            return evaluate_dirs(
                root / "pred",
                root / "gt",
                with_hd95=hd95,
                out=tmp / f"report_{kind}",
                overwrite=True,
            ).summary

        a, b = alternate(repeats, lambda: run("ex"), lambda: run("ml"))
        what = "with HD95" if hd95 else "overlap metrics only (--no-hd95)"
        print(describe(f"evaluate, {pairs} pairs {size}x{size}, {what}", a, b))


def main() -> None:
    """Time both kinds of mask and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--shapes", type=int, nargs="+", default=[30, 150])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None, help="rasterize workers [all cores]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_rasterize(Path(tmp), args.images, args.shapes, args.repeats, args.jobs)
        bench_evaluate(Path(tmp), args.pairs, args.size, args.repeats)


if __name__ == "__main__":
    main()
