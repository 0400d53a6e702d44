"""Imbalance, measured from the training split's pixel counts: which classes are rare, the
median-frequency class weights of ``--class-weights auto``, and the draw probabilities of
``--oversample`` (images holding a rare class drawn more often in whole-image training).

Pure functions of an images x classes table of pixel counts (ignored pixels not counted;
the planner's fingerprint and the run's own measurement of its training masks both give
one), so the plan prints the numbers the run then uses.
"""

from __future__ import annotations

import numpy as np

#: A foreground class is rare below this share of the labelled pixels ...
RARE_SHARE = 0.01
#: ... or when it is in fewer than this share of the images.
RARE_IMAGES = 0.1
#: The share of draws the plan gives images that hold a rare class: nnU-Net's share of
#: patches forced onto foreground (``oversample_foreground_percent``).
OVERSAMPLE_SHARE = 0.33


def rare_classes(counts: np.ndarray) -> list[int]:
    """The foreground ids (>= 1) present in some image and rare: under `RARE_SHARE` of the
    labelled pixels, or in under `RARE_IMAGES` of the images.

    Args:
        counts: images x classes pixel counts (class 0 the background).
    """
    if counts.size == 0:
        return []
    share = counts.sum(axis=0) / max(int(counts.sum()), 1)
    images = (counts > 0).sum(axis=0)
    n = counts.shape[0]
    return [
        c
        for c in range(1, counts.shape[1])
        if images[c] and (share[c] < RARE_SHARE or images[c] < RARE_IMAGES * n)
    ]


def median_frequency(counts: np.ndarray) -> list[float]:
    """Median frequency balancing (Eigen and Fergus 2015): a class's frequency is its pixels
    over all the pixels of the images it appears in; its weight the median of the
    frequencies over its own. A class in no image gets 1 (it has no pixel to weigh).

    Args:
        counts: images x classes pixel counts (ignored pixels not counted).

    Returns:
        One weight per class, background first.
    """
    pixels = counts.sum(axis=0).astype(np.float64)
    holders = counts > 0
    seen = (holders * counts.sum(axis=1, keepdims=True)).sum(axis=0).astype(np.float64)
    present = pixels > 0
    if not present.any():
        return [1.0] * counts.shape[1]
    freq = np.divide(pixels, seen, out=np.zeros_like(pixels), where=present)
    median = float(np.median(freq[present]))
    return [median / f if p else 1.0 for f, p in zip(freq.tolist(), present, strict=True)]


def draw_probabilities(counts: np.ndarray, rare: list[int], share: float) -> np.ndarray:
    """Each training image's chance to be drawn: the images holding a class of `rare` share
    `share` of the draws between them, the others the rest; uniform where that would not
    raise the rare images' share (no rare image, only rare images, or already at least
    `share`).

    Args:
        counts: images x classes pixel counts.
        rare: the class ids whose images are drawn more often.
        share: the share of draws for those images (0..1).
    """
    n = counts.shape[0]
    holds = (counts[:, rare] > 0).any(axis=1) if rare else np.zeros(n, dtype=bool)
    k = int(holds.sum())
    if k in (0, n) or k / n >= share:
        return np.full(n, 1 / n)
    return np.where(holds, share / k, (1 - share) / (n - k))


def describe_rare(counts: np.ndarray, rare: list[int], names: list[str]) -> str:
    """``spot (0.31% of pixels, in 9 of 70 images)``, for the rare classes (at most 3)."""
    share = counts.sum(axis=0) / max(int(counts.sum()), 1)
    images = (counts > 0).sum(axis=0)
    n = counts.shape[0]
    return ", ".join(
        f"{names[c]} ({share[c]:.2%} of pixels, in {images[c]} of {n} images)" for c in rare[:3]
    )
