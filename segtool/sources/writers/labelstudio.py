"""Predictions -> Label Studio tasks with pre-annotations (``predictions``), to import.

Each task names its image in ``data.image`` (relative to the images folder: prefix it with
your storage's URL, e.g. ``/data/local-files/?d=``, if Label Studio serves them from
elsewhere) and holds one prediction with ``model_version`` and ``score`` (the mean of its
regions'); each region is a ``polygonlabels`` result in percent of the image, with its own
``score``, in drawing order. Holes are regions of class 0's name, so the labeling config
needs that label too. The control tags are ``label`` and ``image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segtool.sources.writers.formats import PredictedImage

#: The names of the labeling config's ``<PolygonLabels>`` and ``<Image>`` tags.
FROM_NAME, TO_NAME = "label", "image"


def percent(pixels: float, size: int) -> float:
    """`pixels` in percent of `size`, the float whose product with ``size / 100`` (how readers
    convert back) gives `pixels` exactly, so the vertex lands on the pixel centre it marks."""
    import math

    scale = size / 100.0
    value = pixels / scale
    for _ in range(4):  # a float division is off by at most an ulp or two
        if value * scale == pixels:
            break
        value = math.nextafter(value, math.inf if value * scale < pixels else -math.inf)
    return value


def _result(k: int, item: PredictedImage, region: Any) -> dict:
    result = {
        "id": f"r{k}",
        "type": "polygonlabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": item.width,
        "original_height": item.height,
        "image_rotation": 0,
        "value": {
            "points": [[percent(x, item.width), percent(y, item.height)] for x, y in region.points],
            "closed": True,
            "polygonlabels": [region.label],
        },
    }
    if region.score is not None:
        result["score"] = round(region.score, 4)
    return result


def document(images: Sequence[PredictedImage], names: Sequence[str], version: str) -> Any:
    """The task list, one task per image."""
    del names  # each region names its class
    tasks = []
    for item in images:
        scores = [r.score for r in item.regions if r.score is not None]
        prediction: dict[str, Any] = {
            "model_version": version,
            "result": [_result(k, item, r) for k, r in enumerate(item.regions)],
        }
        if scores:
            prediction["score"] = round(sum(scores) / len(scores), 4)
        tasks.append({"data": {TO_NAME: item.image}, "predictions": [prediction]})
    return tasks
