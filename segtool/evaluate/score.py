"""What scoring one image gives: counts per class, distances, and what the report needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segtool.core.metrics import Counts


@dataclass
class ImageScore:
    """Counts and distances of one image (all arrays indexed by class id)."""

    stem: str
    counts: Counts
    hd95: np.ndarray | None
    missing_prediction: bool = False
    reference_ignored: int = 0
    # Multi-label masks: pixels whose whole label set is right, and pixels counted.
    pixels_right: int | None = None
    pixels_counted: int | None = None
