"""Augmentation presets (albumentations), built from one table.

Masks are never interpolated (nearest neighbour); anything padded or moved in from outside
the image is 0 in the image and the ignore value in the mask, so no loss or metric counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2

from segtool.core.errors import check_choice

#: (image, mask) -> augmented (image, mask); albumentations' calling convention.
Transform = Callable[..., dict[str, Any]]


def _moved(ignore_index: int) -> dict:
    """What geometric transforms fill in: 0 in the image, the ignore value in the mask."""
    return {
        "border_mode": cv2.BORDER_CONSTANT,
        "fill": 0,
        "fill_mask": ignore_index,
        "mask_interpolation": cv2.INTER_NEAREST,
    }


def _light(ignore_index: int) -> list:
    import albumentations as A

    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.0625, 0.0625),
            scale=(0.9, 1.1),
            rotate=(-15, 15),
            p=0.5,
            **_moved(ignore_index),
        ),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _strong(ignore_index: int) -> list:
    import albumentations as A

    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.1, 0.1),
            scale=(0.75, 1.25),
            rotate=(-30, 30),
            p=0.7,
            **_moved(ignore_index),
        ),
        A.ElasticTransform(alpha=30, sigma=6, p=0.3, **_moved(ignore_index)),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.7),
        A.HueSaturationValue(p=0.3),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
    ]


#: Preset name -> builder of its transform list (given the ignore value).
PRESETS: dict[str, Callable[[int], list] | None] = {
    "none": None,
    "light": _light,
    "strong": _strong,
}


def build_augmentation(
    preset: str, ignore_index: int, seed: int | None = None, *, geometric_only: bool = False
) -> Transform | None:
    """The augmentation for a preset name, or None for ``none``.

    `geometric_only` keeps the transforms that move pixels (flips, affine, elastic) and drops
    the colour ones, for standardised MRI slices with any number of channels.

    Raises:
        SegtoolError: unknown preset (the message lists the valid ones).
    """
    check_choice("augment", preset, PRESETS)
    builder = PRESETS[preset]
    if builder is None:
        return None
    import albumentations as A

    transforms = builder(ignore_index)
    if geometric_only:
        transforms = [t for t in transforms if isinstance(t, A.DualTransform)]
    return A.Compose(transforms, seed=seed)
