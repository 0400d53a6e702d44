"""Shared helpers: tiny labelme files, images and masks made in tmp_path."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def shape(label: str, points: list, shape_type: str = "polygon", **extra) -> dict:
    """A labelme shape record."""
    return {
        "label": label,
        "points": points,
        "shape_type": shape_type,
        "group_id": None,
        "flags": {},
        **extra,
    }


def write_image(
    path: Path, width: int, height: int, *, exif_orientation: int | None = None
) -> Path:
    """A small random image (JPEG or PNG by suffix), optionally with an EXIF orientation tag."""
    rng = np.random.default_rng(width * 1000 + height)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def image_b64(width: int, height: int, fmt: str = "PNG") -> str:
    """A base64-encoded image, as labelme's imageData."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def write_labelme(
    folder: Path,
    stem: str,
    shapes: list[dict],
    size: tuple[int, int] = (16, 12),
    *,
    image: bool = True,
    suffix: str = ".png",
    **fields,
) -> Path:
    """A labelme JSON (and, with `image`, its image beside it); `fields` override JSON keys."""
    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        write_image(folder / f"{stem}{suffix}", width, height)
    doc = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": f"{stem}{suffix}",
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
        **fields,
    }
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def labels_txt(tmp_path: Path) -> Path:
    """A labelme labels file with ignore, background and two classes."""
    path = tmp_path / "labels.txt"
    path.write_text("__ignore__\n_background_\ncat\ndog\n")
    return path


def read_png(path: Path) -> np.ndarray:
    """A PNG's pixel values as an array."""
    with Image.open(path) as img:
        return np.asarray(img)
