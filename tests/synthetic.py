"""A tiny, easy, deterministic dataset for training tests: bright squares (class 1) and dark
discs (class 2) on noise, 48 x 48."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask


def make_dataset(root: Path, n: int = 16, size: int = 48, classes: int = 3, seed: int = 0) -> Path:
    """Write images/, masks/, classes.json and a split.json (last 4 images for validation)."""
    names = ["_background_", "square", "disc"][:classes]
    cmap = make_class_map(names)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        x, y = rng.integers(2, size - 20, 2)
        draw.rectangle([x, y, x + 14, y + 14], fill=1)
        if classes > 2:
            cx, cy = rng.integers(8, size - 8, 2)
            draw.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=2)
        m = np.asarray(mask)
        base = rng.normal(110, 20, (size, size, 3))
        base[m == 1] += 100
        base[m == 2] -= 80
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            root / "images" / f"s{i:02d}.png"
        )
        write_mask(root / "masks" / f"s{i:02d}.png", m, cmap)
    cmap.save(root / "classes.json")
    stems = [f"s{i:02d}" for i in range(n)]
    split = {"seed": 0, "train": stems[:-4], "val": stems[-4:], "test": []}
    (root / "split.json").write_text(__import__("json").dumps(split))
    return root


def make_multilabel_dataset(root: Path, n: int = 18, size: int = 48, seed: int = 0) -> Path:
    """A multi-label dataset: squares (class 1, red) and discs (class 2, blue) that overlap,
    written as bit-set masks; the last 6 images are 3 for validation and 3 for testing."""
    from segtool.core.multilabel import encode, write_multilabel_mask

    cmap = make_class_map(["_background_", "square", "disc"], multilabel=True)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        planes = np.zeros((2, size, size), dtype=bool)
        x, y = rng.integers(2, size - 22, 2)
        planes[0, y : y + 16, x : x + 16] = True
        cx, cy = x + rng.integers(4, 14), y + rng.integers(4, 14)  # overlaps the square
        yy, xx = np.mgrid[:size, :size]
        planes[1] = (yy - cy) ** 2 + (xx - cx) ** 2 <= 49
        base = rng.normal(100, 15, (size, size, 3))
        base[..., 0] += 110 * planes[0]
        base[..., 2] += 110 * planes[1]
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            root / "images" / f"m{i:02d}.png"
        )
        write_multilabel_mask(root / "masks" / f"m{i:02d}.png", encode(planes))
    cmap.save(root / "classes.json")
    stems = [f"m{i:02d}" for i in range(n)]
    split = {"seed": 0, "train": stems[:-6], "val": stems[-6:-3], "test": stems[-3:]}
    (root / "split.json").write_text(__import__("json").dumps(split))
    return root
