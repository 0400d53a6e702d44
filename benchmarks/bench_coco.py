"""segtool rasterize on a COCO file against the usual pycocotools loop, same masks.

The baseline is the loop COCO users write: load the file with ``COCO``, then for each image
start from zeros, ``mask[coco.annToMask(ann) > 0] = id`` for each annotation in file order
(crowd regions painted 255), and save the PNG; one image after another. segtool reads the
same file, checks every image, paints each annotation only inside its bounding box and writes
on all cores. Both outputs are compared pixel for pixel before the ratio is printed.

    python benchmarks/bench_coco.py [--images 500] [--annotations 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.rasterize.folder import rasterize_dir

WIDTH, HEIGHT = 640, 480
CATEGORIES = ["person", "car", "bicycle", "dog", "bus"]


def star(rng: np.random.Generator) -> list[float]:
    """A random star-shaped polygon, partly off the image now and then."""
    cx, cy = rng.uniform(-30, WIDTH + 30), rng.uniform(-30, HEIGHT + 30)
    n = int(rng.integers(8, 30))
    radius = rng.uniform(10, 120, n)
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    return [
        round(float(v), 2)
        for r, a in zip(radius, angles, strict=True)
        for v in (cx + r * math.cos(a), cy + r * math.sin(a))
    ]


def make_coco(root: Path, n_images: int, n_annotations: int, seed: int = 0) -> Path:
    """Write `n_images` JPEGs and one instances JSON: mostly polygons (some in two parts),
    every fifth annotation a compressed RLE, every twentieth a crowd region."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = ((xx / WIDTH * 200)[..., None] + (yy / HEIGHT * 50)[..., None] + [0, 30, 60]) % 255
    Image.fromarray(base.astype(np.uint8)).save(root / "frame.jpg", quality=90)
    data = (root / "frame.jpg").read_bytes()
    images, annotations = [], []
    for i in range(n_images):
        name = f"{i:012d}.jpg"
        (root / "images" / name).write_bytes(data)
        images.append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for k in range(n_annotations):
            segm: list | dict = [star(rng)] + ([star(rng)] if k % 7 == 3 else [])
            if k % 5 == 4:
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, HEIGHT, WIDTH))
                segm = {"size": rle["size"], "counts": rle["counts"].decode()}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, len(CATEGORIES) + 1)),
                    "iscrowd": int(k % 20 == 19),
                    "segmentation": segm,
                    "area": 0,
                    "bbox": [0, 0, 0, 0],
                }
            )
    (root / "frame.jpg").unlink()
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def pycocotools_loop(path: Path, out: Path) -> None:
    """The usual loop: annToMask per annotation, composite in file order, save a PNG."""
    out.mkdir(exist_ok=True)
    coco = COCO(str(path))
    ids = {
        c["id"]: i + 1
        for i, c in enumerate(sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["name"]))
    }
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        mask = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in coco.imgToAnns[image_id]:
            mask[coco.annToMask(ann) > 0] = 255 if ann["iscrowd"] else ids[ann["category_id"]]
        Image.fromarray(mask).save(out / f"{Path(info['file_name']).stem}.png")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Time both, alternating, and print the ratio of each round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--annotations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools on numpy 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = make_coco(tmp / "coco", args.images, args.annotations)
        ratios = []
        for _ in range(args.repeats):
            base_s = timed(lambda: pycocotools_loop(path, tmp / "ref"))
            seg_s = timed(
                lambda: rasterize_dir(
                    path,
                    tmp / "seg",
                    format="coco",
                    image_dir=tmp / "coco" / "images",
                    images="none",
                    jobs=args.jobs,
                    overwrite=True,
                )
            )
            ratios.append(base_s / seg_s)
            print(
                f"pycocotools loop {base_s:.2f}s, segtool {seg_s:.2f}s, ratio {base_s / seg_s:.2f}x"
            )
        for ref in sorted((tmp / "ref").iterdir()):
            a = np.asarray(Image.open(ref))
            b = np.asarray(Image.open(tmp / "seg" / "masks" / ref.name))
            if not np.array_equal(a, b):
                raise SystemExit(f"MISMATCH in {ref.name}")
        print(
            f"{args.images} images {WIDTH}x{HEIGHT}, {args.annotations} annotations each: masks "
            f"identical; ratio {min(ratios):.2f}x to {max(ratios):.2f}x over {args.repeats} rounds"
        )


if __name__ == "__main__":
    main()
