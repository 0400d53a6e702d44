"""Predictions as annotations, and back: the IoU per class of ``segtool rasterize`` on what
``predict --as`` writes, for each format and simplification tolerance.

Masks like a model's: blobs of three classes (ellipses and rotated boxes with holes, touching
and overlapping one another) plus specks of a few pixels, on 256 x 256 images. Each mask goes
through predict's own annotation step (`segtool.predict.annotations.AnnotationSink`) into
the format's file, then through ``rasterize_dir`` (the reader, the image checks, the drawing,
the PNG), and the masks that come back are compared with the originals: IoU per class over
all images (pooled counts), the worst image's IoU, and the vertices per polygon.

    python benchmarks/bench_roundtrip.py [--images 20] [--tolerances 0,0.5,1,2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.classes import make_class_map
from segtool.core.masks import read_mask
from segtool.predict.annotations import AnnotationSink
from segtool.rasterize.folder import rasterize_dir
from segtool.sources.writers.formats import ANNOTATION_FORMATS
from segtool.sources.writers.polygons import painted_regions

SIZE = 256
NAMES = ["_background_", "cell", "nucleus", "debris"]


def blobs(rng: np.random.Generator) -> np.ndarray:
    """One mask: ellipses and boxes, some with holes, drawn over one another, and specks."""
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 10))):
        c = int(rng.integers(1, len(NAMES)))
        x, y = rng.uniform(0, SIZE, 2)
        rx, ry = rng.uniform(6, 50, 2)
        if rng.random() < 0.5:
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=c)
        else:
            angle = rng.uniform(0, np.pi)
            dx, dy = np.cos(angle), np.sin(angle)
            corners = [(x + sx * rx * dx - sy * ry * dy, y + sx * rx * dy + sy * ry * dx)
                       for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]  # fmt: skip
            draw.polygon(corners, fill=c)
        if rng.random() < 0.4:  # a hole
            draw.ellipse([x - rx / 3, y - ry / 3, x + rx / 3, y + ry / 3], fill=0)
    mask = np.asarray(canvas).copy()
    for _ in range(int(rng.integers(0, 12))):  # specks of one to a few pixels
        y, x = rng.integers(0, SIZE - 2, 2)
        mask[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = rng.integers(0, 4)
    return mask


def round_trip(fmt: str, tolerance: float, masks: list[np.ndarray], root: Path) -> dict:
    """IoU per class (pooled, and the worst image's) and mean vertices per polygon."""
    images, out = root / "images", root / f"{fmt}-{tolerance}"
    out.mkdir()
    cmap = make_class_map(NAMES)
    sink = AnnotationSink(
        ANNOTATION_FORMATS[fmt], cmap, images=images, out=out, tolerance=tolerance,
        embed=False, version="bench",
    )  # fmt: skip
    vertices = []
    for i, mask in enumerate(masks):
        probs = np.ones((len(NAMES), *mask.shape), np.float32)
        sink.add(out, images / f"m{i:03d}.png", mask, probs)
        if not sink.fmt.masks:
            vertices += [len(r.points) for r in painted_regions(mask, NAMES, tolerance)]
    sink.finish(out)
    file = ANNOTATION_FORMATS[fmt].file
    source = out if file is None else out / file
    back = root / f"back-{fmt}-{tolerance}"
    where = {} if file is None else {"image_dir": images}
    rasterize_dir(source, back, labels=root / "classes.json", jobs=1, images="none", **where)
    inter, union = np.zeros(len(NAMES)), np.zeros(len(NAMES))
    worst = 1.0
    for i, mask in enumerate(masks):
        got = read_mask(back / "masks" / f"m{i:03d}.png")
        for c in range(1, len(NAMES)):
            a, b = mask == c, got == c
            i_, u_ = (a & b).sum(), (a | b).sum()
            inter[c], union[c] = inter[c] + i_, union[c] + u_
            if u_:
                worst = min(worst, i_ / u_)
    ious = {NAMES[c]: inter[c] / union[c] for c in range(1, len(NAMES))}
    return {"iou": ious, "worst": worst, "vertices": np.mean(vertices) if vertices else None}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--tolerances", default="0,0.5,1,2")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    masks = [blobs(rng) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        make_class_map(NAMES).save(root / "classes.json")
        for i in range(len(masks)):
            Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(
                root / "images" / f"m{i:03d}.png"
            )
        print(f"{args.images} masks of {SIZE} x {SIZE}, classes {', '.join(NAMES[1:])}")
        print(f"{'format':<12} {'simplify':>8} " + " ".join(f"{n:>8}" for n in NAMES[1:])
              + f" {'worst':>8} {'vertices':>9}")  # fmt: skip
        for fmt in ANNOTATION_FORMATS:
            tolerances = [0.0] if fmt == "coco" else [float(t) for t in args.tolerances.split(",")]
            for tolerance in tolerances:
                r = round_trip(fmt, tolerance, masks, root)
                ious = " ".join(f"{r['iou'][n]:8.4f}" for n in NAMES[1:])
                vertices = "RLE" if r["vertices"] is None else f"{r['vertices']:.1f}"
                print(f"{fmt:<12} {tolerance:>8g} {ious} {r['worst']:8.4f} {vertices:>9}")


if __name__ == "__main__":
    main()
