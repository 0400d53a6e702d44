"""What one worker learns about (and does with) one image: shared by every source."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from segtool.core.constants import IGNORE_LABEL
from segtool.sources.shapes import ImageSource

if TYPE_CHECKING:
    import numpy as np


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


def pixel_counts(mask: np.ndarray) -> dict[int, int]:
    """Pixels per value present in a mask (class ids, or multi-label bit values)."""
    import numpy as np
    from PIL import Image

    if mask.dtype == np.uint8:
        # PIL's C histogram is several times faster than np.bincount on a full image.
        counts = enumerate(Image.fromarray(mask).histogram())
    elif mask.dtype == np.uint16:
        counts = enumerate(np.bincount(mask.ravel()))
    else:
        counts = zip(*np.unique(mask, return_counts=True), strict=True)
    return {int(v): int(n) for v, n in counts if n}


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
