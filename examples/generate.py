"""Generate segtool's example dataset: small photos of shapes with labelme polygon annotations.

Deterministic (fixed seed): running it again rewrites the same files. Three classes:
``disc`` (reddish discs), ``bar`` (bluish bars that often cross the discs) and ``spot``
(tiny yellow specks: the rare class, about 1% of pixels). Backgrounds are random gradients
with blotches and noise, so the task is not a colour threshold.

    python examples/generate.py            # writes examples/annotations/ and labels.txt
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
N_IMAGES = 64
SIZES = [(128, 96), (128, 128), (160, 128), (160, 96)]
LABELS = ["__ignore__", "_background_", "bar", "disc", "spot"]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient in a random muted colour, blotches and fine noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    start, end = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    img = start + (end - start) * ramp[..., None]
    blotches = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(blotches)
    for _ in range(rng.integers(3, 8)):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 30)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(30, 90)))
    soft = np.asarray(blotches.filter(ImageFilter.GaussianBlur(4)), dtype=np.float32)
    img = img - soft[..., None] * rng.choice([-1, 1])
    return img


def _polygon_circle(cx: float, cy: float, r: float, n: int, rng: np.random.Generator) -> list:
    wobble = rng.uniform(0.9, 1.1, n)
    return [
        [
            round(cx + r * w * math.cos(2 * math.pi * k / n), 2),
            round(cy + r * w * math.sin(2 * math.pi * k / n), 2),
        ]
        for k, w in enumerate(wobble)
    ]


def _polygon_bar(cx: float, cy: float, length: float, thick: float, angle: float) -> list:
    dx, dy = math.cos(angle), math.sin(angle)
    px, py = -dy, dx
    corners = [(length, thick), (length, -thick), (-length, -thick), (-length, thick)]
    return [[round(cx + a * dx + b * px, 2), round(cy + a * dy + b * py, 2)] for a, b in corners]


def _colour(rng: np.random.Generator, base: tuple[int, int, int], spread: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def make_example(index: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One image and its labelme shapes, in drawing order (later shapes on top)."""
    width, height = SIZES[index % len(SIZES)]
    img = Image.fromarray(np.clip(_background(rng, width, height), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    shapes = []
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(10, 24)
        points = _polygon_circle(rng.uniform(0, width), rng.uniform(0, height), r, 20, rng)
        shapes.append(("disc", points, _colour(rng, (200, 50, 50), 35)))
    for _ in range(rng.integers(1, 3)):
        points = _polygon_bar(
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(18, 45),
            rng.uniform(3, 6),
            rng.uniform(0, math.pi),
        )
        shapes.append(("bar", points, _colour(rng, (40, 70, 210), 35)))
    for _ in range(rng.integers(1, 4)):
        points = _polygon_circle(
            rng.uniform(4, width - 4), rng.uniform(4, height - 4), rng.uniform(2.5, 4.0), 6, rng
        )
        shapes.append(("spot", points, _colour(rng, (240, 230, 40), 15)))
    for _label, points, colour in shapes:
        draw.polygon([tuple(p) for p in points], fill=colour, outline=colour)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    records = [
        {
            "label": label,
            "points": points,
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }
        for label, points, _ in shapes
    ]
    return img, records


def main() -> None:
    """Write the example annotations, images and labels file."""
    out = HERE / "annotations"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261123)
    for index in range(N_IMAGES):
        img, shapes = make_example(index, rng)
        stem = f"scene_{index:03d}"
        img.save(out / f"{stem}.jpg", quality=90)
        doc = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": f"{stem}.jpg",
            "imageData": None,
            "imageHeight": img.height,
            "imageWidth": img.width,
        }
        (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (HERE / "labels.txt").write_text("\n".join(LABELS) + "\n")
    print(f"wrote {N_IMAGES} images and annotations to {out}")


if __name__ == "__main__":
    main()
