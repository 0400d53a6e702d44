"""Instance masks (``rasterize --instances``): one id per object, written beside the class mask.

labelme folders follow labelme2voc's SegmentationObject (`draw.draw_instances`). For export
files the object is what the format's own tools call one (COCO: an annotation; CVAT: a shape,
or the shapes sharing a ``group_id``; VIA: a region; Label Studio: the results sharing an
``id``), numbered 1..N in the order the objects appear in the file and drawn with the class
mask's own drawing loop (`draw.draw_inked`, through `draw.draw_ids`), shape for shape in the same order, so the two
masks agree pixel for pixel: 0 where the class mask is background, the ignore value where it
is ignore, an object id elsewhere. COCO crowd regions (``iscrowd: 1``) hold many objects, so
they are the ignore value whatever ``--crowd`` paints in the class mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from segtool.core.classes import voc_palette
from segtool.core.constants import BACKGROUND_NAME, IGNORE_INDEX, IGNORE_INDEX_16, IGNORE_LABEL
from segtool.rasterize.draw import draw_ids
from segtool.sources.shapes import Shape

if TYPE_CHECKING:
    import numpy as np

#: Folder of the optional instance masks (``--instances``).
INSTANCES_DIR = "instances"
#: The most objects of an export image: 16-bit ids, 65535 being the ignore value.
MAX_OBJECTS = IGNORE_INDEX_16 - 1


def _is_crowd(shape: Shape) -> bool:
    return bool(getattr(shape, "crowd", False))


def number_objects(shapes: Sequence[Shape]) -> tuple[dict[int, int], list[str]]:
    """Number an export image's objects in file order.

    A shape's object is its ``instance`` key (the file position of the object's first element)
    or, when None, its own position in `shapes`. Shapes labelled ``__ignore__`` or background
    and COCO crowd regions make no object.

    Returns:
        (object key -> id 1..N, in increasing key order; the label of each object, index i
        being id i+1: the label of its first shape drawn).
    """
    first_label: dict[int, str] = {}
    for index, shape in enumerate(shapes):
        if shape.label in (IGNORE_LABEL, BACKGROUND_NAME) or _is_crowd(shape):
            continue
        first_label.setdefault(index if shape.instance is None else shape.instance, shape.label)
    keys = sorted(first_label)
    return {key: i for i, key in enumerate(keys, 1)}, [first_label[key] for key in keys]


def draw_objects(shapes: Sequence[Shape], height: int, width: int) -> tuple[np.ndarray, list[str]]:
    """An export image's instance mask: each shape drawn in order in its object's id.

    Returns:
        (uint8 ids with ignore 255, or uint16 with ignore 65535 past 254 objects; the label of
        each object, index i being id i+1).

    Raises:
        ValueError: more than `MAX_OBJECTS` objects.
    """
    number, labels = number_objects(shapes)
    if len(labels) > MAX_OBJECTS:
        raise ValueError(f"{len(labels)} objects do not fit a 16-bit instance mask ({MAX_OBJECTS})")
    wide = len(labels) >= IGNORE_INDEX
    ignore = IGNORE_INDEX_16 if wide else IGNORE_INDEX
    inks = []
    for index, shape in enumerate(shapes):
        if shape.label == IGNORE_LABEL or _is_crowd(shape):
            ink = ignore
        elif shape.label == BACKGROUND_NAME:
            ink = 0
        else:
            ink = number[index if shape.instance is None else shape.instance]
        inks.append((shape, ink))
    return draw_ids(inks, height, width, wide=wide), labels


def write_instances(path: Path, ids: np.ndarray) -> None:
    """Write an instance mask as labelme does: an 8-bit palette PNG (VOC colours, so 255 shows
    as VOC's void colour), a 16-bit grayscale PNG past 255 ids."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(ids)
    if ids.dtype == np.uint8:
        image.putpalette(voc_palette(256).reshape(-1).tolist())
    image.save(path, format="PNG", compress_level=1)
