"""Predictions -> a VIA 2 annotations JSON ("Annotation > Import annotations (from json)").

One entry per image, keyed ``filename + size`` as VIA keys them; each region a ``polygon``
whose class is the region attribute ``class``; holes are regions of class 0's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segtool.sources.writers.formats import PredictedImage

#: The region attribute that names the class.
CLASS_ATTRIBUTE = "class"


def document(images: Sequence[PredictedImage], names: Sequence[str], version: str) -> Any:
    """The VIA document: ``{filename+size: {filename, size, regions, file_attributes}}``."""
    del names, version  # VIA regions name their class; the file holds no model
    return {
        f"{item.image}{item.file_size}": {
            "filename": item.image,
            "size": item.file_size,
            "regions": [
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [x for x, _ in r.points],
                        "all_points_y": [y for _, y in r.points],
                    },
                    "region_attributes": {CLASS_ATTRIBUTE: r.label},
                }
                for r in item.regions
            ],
            "file_attributes": {},
        }
        for item in images
    }
