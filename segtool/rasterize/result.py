"""What one worker learns about (and does with) one image: shared by every source."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from segtool.core.classes import ClassMap
from segtool.core.constants import IGNORE_LABEL, MASK_SUFFIX, MASKS_DIR
from segtool.core.masks import byte_counts, write_mask
from segtool.rasterize.draw import draw_canvas, draw_rows
from segtool.sources.shapes import ImageSource, Shape

if TYPE_CHECKING:
    import numpy as np

#: Folder of the colour previews of multi-label masks (``--preview``).
PREVIEWS_DIR = "previews"


def label_problem(labels: set[str], known: frozenset[str]) -> str | None:
    """A line naming the labels missing from the class map, or None."""
    missing = sorted(labels - known - {IGNORE_LABEL})
    if not missing:
        return None
    others = f" (nor {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""
    return (
        f"label {missing[0]!r} is not in the class map{others}; add it to the labels file "
        f"or fix the shape's label"
    )


@dataclass
class FileResult:
    """What one worker learned about (and did with) one annotation file or export image."""

    path: Path
    problem: str | None = None
    labels: list[str] = field(default_factory=list)
    pixels: dict[int, int] = field(default_factory=dict)
    shapes: Counter = field(default_factory=Counter)
    objects: Counter = field(default_factory=Counter)
    outside: int = 0
    warnings: list[str] = field(default_factory=list)
    #: the image file read (its folder must not be replaced by the output)
    image: Path | None = None


def pixel_counts(mask: np.ndarray) -> dict[int, int]:
    """Pixels per value present in a mask (class ids, or multi-label bit values)."""
    import numpy as np

    if mask.dtype == np.uint8:
        # PIL's C histogram (`byte_counts`) is several times faster than np.bincount.
        counts = enumerate(byte_counts(np.ascontiguousarray(mask).reshape(-1)))
    elif mask.dtype == np.uint16:
        counts = enumerate(np.bincount(mask.ravel()))
    else:
        counts = zip(*np.unique(mask, return_counts=True), strict=True)
    return {int(v): int(n) for v, n in counts if n}


def write_exclusive(
    shapes: tuple[Shape, ...], source: ImageSource, class_map: ClassMap, target: Path, level: int
) -> dict[int, int]:
    """Draw and write an exclusive label mask (16-bit past 255 classes) for `target`; returns
    its pixels per value, counted in the same pass."""
    if class_map.sixteen_bit:
        import numpy as np

        canvas = draw_canvas(shapes, source.height, source.width, class_map.value_of(), wide=True)
        mask = np.asarray(canvas).astype(np.uint16)
        write_mask(target, mask, class_map, atomic=False, level=level)
        return pixel_counts(mask)
    # An 8-bit mask is drawn straight into its PNG rows, which are encoded and counted as they
    # are, never copied (nor numpy loaded).
    rows = draw_rows(shapes, source.height, source.width, class_map.value_of())
    write_mask(target, rows, class_map, atomic=False, level=level)
    return rows.pixel_counts()


def write_multilabel(
    shapes: tuple[Shape, ...],
    source: ImageSource,
    class_map: ClassMap,
    out: Path,
    stem: str,
    previews: bool = False,
) -> dict[int, int]:
    """Draw and write one image's multi-label mask into the dataset folder `out` (and, with
    `previews`, its colour preview); its pixels per bit value."""
    from PIL import Image

    from segtool.core.multilabel import preview, write_multilabel_mask
    from segtool.rasterize.draw import draw_multilabel

    ids = {name: i for i, name in enumerate(class_map.names)}
    mask = draw_multilabel(shapes, source.height, source.width, ids, class_map.num_foreground)
    write_multilabel_mask(out / MASKS_DIR / f"{stem}{MASK_SUFFIX}", mask, atomic=False)
    if previews:
        rgb = preview(mask, class_map.num_foreground, class_map.colors)
        Image.fromarray(rgb).save(out / PREVIEWS_DIR / f"{stem}{MASK_SUFFIX}")
    return pixel_counts(mask)


def place_image(source: ImageSource, target: Path, images: str) -> list[str]:
    """Copy or hard-link the original image bytes (or write the embedded ones) to `target`."""
    if source.file is None:
        target.write_bytes(source.data or b"")
    elif images == "link":
        try:
            os.link(source.file, target)
        except OSError:
            shutil.copyfile(source.file, target)
            return [f"{source.file}: cannot hard-link (another file system?); copied instead"]
    else:
        shutil.copyfile(source.file, target)
    return []
