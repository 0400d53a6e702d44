"""Predictions -> one COCO instances JSON, every part an RLE mask.

COCO polygons cannot hold holes, and pycocotools rasterises a polygon by its own rule (about
half of each edge pixel), which does not give back the pixels it was traced from. So every
connected part of a class (8-connected, holes kept) is one annotation with an RLE
``segmentation`` and ``iscrowd: 0``: ``annToMask`` gives back exactly the predicted pixels.
Parts of a multi-label run may overlap; each class is its own annotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segtool.sources.writers.formats import PredictedImage


def document(images: Sequence[PredictedImage], names: Sequence[str], version: str) -> Any:
    """The COCO document: images (ids from 1), categories (class ids 1..K-1, as the run's
    class map numbers them), one RLE annotation per part with its ``score``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    annotations = []
    for image_id, item in enumerate(images, start=1):
        for blob in item.blobs:
            rle = mask_utils.encode(np.asfortranarray(blob.mask.astype(np.uint8)))
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": blob.class_id,
                "segmentation": {
                    "size": [item.height, item.width],
                    "counts": rle["counts"].decode(),
                },
                "area": int(blob.mask.sum()),
                "bbox": list(blob.bbox),
                "iscrowd": 0,
            }
            if blob.score is not None:
                annotation["score"] = round(blob.score, 4)
            annotations.append(annotation)
    return {
        "info": {"description": f"predictions of {version}"},
        "images": [
            {"id": i, "file_name": item.image, "width": item.width, "height": item.height}
            for i, item in enumerate(images, start=1)
        ],
        "categories": [
            {"id": c, "name": name, "supercategory": ""} for c, name in enumerate(names) if c
        ],
        "annotations": annotations,
    }
