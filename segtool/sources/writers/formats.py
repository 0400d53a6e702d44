"""Which annotation formats predictions can be written as, and what each can carry.

One row per format: the file it writes, whether it carries masks (COCO's RLE: exact) or the
painter's polygons of `polygons.painted_regions`, and whether it can hold a multi-label run's
overlapping classes. `write_document` hands a format's images to its writer module.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segtool.core.errors import SegtoolError, check_choice
from segtool.sources.writers.polygons import Blob, Region, class_blobs, painted_regions

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class AnnotationFormat:
    """What one format writes and can carry.

    Attributes:
        name: the ``--as`` value.
        file: the one file written for all images, or None: one ``<stem>.json`` per image.
        masks: carries each part as an exact mask (COCO RLE) rather than painted polygons.
        overlapping: can hold classes that overlap (a multi-label run's masks).
    """

    name: str
    file: str | None
    masks: bool = False
    overlapping: bool = False


#: Every format ``predict --as`` writes, by name.
ANNOTATION_FORMATS = {
    "labelme": AnnotationFormat("labelme", None),
    "coco": AnnotationFormat("coco", "coco.json", masks=True, overlapping=True),
    "cvat": AnnotationFormat("cvat", "annotations.xml"),
    "via": AnnotationFormat("via", "via.json"),
    "labelstudio": AnnotationFormat("labelstudio", "labelstudio.json"),
}


def annotation_format(name: str, multilabel: bool) -> AnnotationFormat:
    """The format `name`, checked against the run's kind of masks.

    Raises:
        SegtoolError: an unknown format, or a polygon format for a multi-label run.
    """
    check_choice("as", name, tuple(ANNOTATION_FORMATS))
    fmt = ANNOTATION_FORMATS[name]
    if multilabel and not fmt.overlapping:
        raise SegtoolError(
            f"--as {name}: the run is multi-label (a pixel may hold several classes), but "
            f"{name} polygons paint one class per pixel, holes as background shapes drawn over "
            f"them, so they cannot carry overlapping classes; use --as coco (one RLE mask per "
            f"class and part, overlaps kept)"
        )
    return fmt


@dataclass(frozen=True)
class PredictedImage:
    """One image's prediction, ready for a writer.

    Attributes:
        image: the image as the file references it (labelme: relative to the JSON's folder;
            the export formats: relative to the images folder, ``--image-dir`` of rasterize).
        width, height: the image's size as displayed.
        regions: the painter's polygons (polygon formats).
        blobs: the parts as masks (COCO).
        data: the image's bytes, to embed (labelme's ``imageData``), or None.
        file_size: the image file's size in bytes (VIA's key).
    """

    image: str
    width: int
    height: int
    regions: tuple[Region, ...] = ()
    blobs: tuple[Blob, ...] = ()
    data: bytes | None = field(default=None, repr=False)
    file_size: int = -1


def shapes_of(
    fmt: AnnotationFormat,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    tolerance: float = 0.0,
    confidence: np.ndarray | None = None,
) -> dict[str, tuple]:
    """The `PredictedImage` fields `fmt` needs from one mask.

    Args:
        labels: H x W class ids, or for `fmt.overlapping` formats C x H x W bool class planes.
        names: class names by id.
        tolerance: polygon simplification in pixels (polygon formats).
        confidence: H x W confidence of each pixel's class (C x H x W with planes).
    """
    import numpy as np

    if fmt.masks:
        if labels.ndim == 2:
            planes = np.stack([labels == c for c in range(1, len(names))])
            if confidence is not None:
                confidence = np.broadcast_to(confidence, planes.shape)
        else:
            planes = labels
        return {"blobs": tuple(class_blobs(planes, names, confidence))}
    return {"regions": tuple(painted_regions(labels, names, tolerance, confidence))}


def write_document(
    fmt: AnnotationFormat, images: Sequence[PredictedImage], names: Sequence[str], version: str
) -> Any:
    """The format's document for all `images` (labelme: a list, one document per image).

    Args:
        names: class names by id (id 0 the background).
        version: the model that predicted (Label Studio's ``model_version``).
    """
    module = importlib.import_module(f"segtool.sources.writers.{fmt.name}")
    return module.document(images, names, version)
