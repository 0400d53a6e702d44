"""segtool rasterize against labelme's per-shape method, on the same synthetic folders.

The baseline does what labelme's labelme2voc export does for each file: read the JSON, decode
the image to learn its size, draw every shape on its own full-size canvas, assign the class id
shape by shape, save the palette PNG; one file after another. segtool checks every file first,
then draws all shapes of an image on one canvas, on all cores. Both outputs are compared pixel
for pixel before the ratio is printed.

    python benchmarks/bench_rasterize.py [--images 80] [--shapes 30 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_whole import HEIGHT, LABELS, WIDTH, make_annotations
from segtool.core.classes import read_class_map
from segtool.core.masks import mask_image
from segtool.rasterize.folder import rasterize_dir
from segtool.sources.labelme import parse_labelme
from tests.test_rasterize import labelme_reference


def best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` wall-clock timings of `fn()`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def labelme_way(folder: Path, out: Path, labels: Path) -> None:
    """The per-shape baseline, file after file, as labelme2voc does it."""
    cmap = read_class_map(labels)
    values = cmap.value_of()
    out.mkdir(exist_ok=True)
    for path in sorted(folder.glob("*.json")):
        ann = parse_labelme(path)
        height, width = np.asarray(Image.open(ann.image_path)).shape[:2]  # labelme decodes it
        label = labelme_reference(list(ann.shapes), height, width, values)
        mask_image(label.astype(np.uint8), cmap).save(out / f"{path.stem}.png")


def main() -> None:
    """Time both on each folder and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--shapes", type=int, nargs="+", default=[30, 150])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = tmp / "labels.txt"
        labels.write_text("\n".join(["__ignore__", *LABELS]) + "\n")
        for n_shapes in args.shapes:
            folder = tmp / f"ann_{n_shapes}"
            make_annotations(folder, args.images, n_shapes)
            ref_dir, seg_dir = tmp / f"ref_{n_shapes}", tmp / f"seg_{n_shapes}"
            ref_s = best_of(3, partial(labelme_way, folder, ref_dir, labels))
            seg_s = best_of(
                3, partial(rasterize_dir, folder, seg_dir, labels=labels, overwrite=True)
            )
            for ref in sorted((tmp / f"ref_{n_shapes}").iterdir()):
                a = np.asarray(Image.open(ref))
                b = np.asarray(Image.open(tmp / f"seg_{n_shapes}" / "masks" / ref.name))
                if not np.array_equal(a, b):
                    raise SystemExit(f"MISMATCH in {ref.name}")
            print(
                f"{args.images} images {WIDTH}x{HEIGHT}, {n_shapes} polygons each: "
                f"labelme per-shape {ref_s:.2f}s, segtool {seg_s:.2f}s (best of 3), "
                f"masks identical, ratio {ref_s / seg_s:.1f}x"
            )


if __name__ == "__main__":
    main()
