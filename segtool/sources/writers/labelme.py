"""Predictions -> labelme JSON files, one per image, as labelme itself saves them.

Each region is a ``polygon`` shape in drawing order (labelme2voc paints in file order, later
over earlier); holes are shapes of class 0's name (``_background_``). The image is referenced
by ``imagePath`` relative to the JSON file, and embedded (``imageData``) only when asked.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from segtool.sources.writers.formats import PredictedImage

#: The labelme version the files say they were written for (its current JSON layout).
LABELME_VERSION = "5.5.0"


def shape(label: str, points: Sequence[tuple[float, float]], score: float | None) -> dict:
    """One labelme polygon shape; the score, if any, goes in the shape's description."""
    return {
        "label": label,
        "points": [[x, y] for x, y in points],
        "group_id": None,
        "description": "" if score is None else f"score {score:.3f}",
        "shape_type": "polygon",
        "flags": {},
        "mask": None,
    }


def document(images: Sequence[PredictedImage], names: Sequence[str], version: str) -> list[Any]:
    """One labelme document per image, in `images`' order."""
    del names, version  # labelme files name their classes shape by shape and hold no model
    return [
        {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": [shape(r.label, r.points, r.score) for r in item.regions],
            "imagePath": item.image,
            "imageData": None if item.data is None else base64.b64encode(item.data).decode(),
            "imageHeight": item.height,
            "imageWidth": item.width,
        }
        for item in images
    ]
