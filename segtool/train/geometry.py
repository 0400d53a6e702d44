"""The input geometry: the box images are resized to, and how (stretched, or scaled with the
aspect ratio kept and padded), shared by training and predict so that predict undoes exactly
what training did. Free of torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from segtool.core.errors import SegtoolError

#: Every input side must be a multiple of this (five 2x downsamplings).
STRIDE = 32
#: ``stretch``: resize to the box exactly; ``keep``: scale the long side to fit the box,
#: keeping the aspect ratio, and pad the rest (image 0, mask the ignore value).
RESIZE_MODES = ("stretch", "keep")


def parse_size(value: Any) -> tuple[int, int] | None:
    """``--size``: None, ``S`` (a square) or ``H,W`` -> (height, width).

    Raises:
        SegtoolError: not one or two positive integers.
    """
    if value is None:
        return None
    if isinstance(value, int):
        parts: list[Any] = [value, value]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = str(value).replace("x", ",").split(",")
        parts = parts * 2 if len(parts) == 1 else parts
    try:
        height, width = (int(v) for v in parts)
    except (TypeError, ValueError):
        height = width = 0
    if min(height, width) < 8:
        raise SegtoolError(f"--size {value!r}: give S or H,W in pixels (at least 8), e.g. 256,448")
    return height, width


def scaled_shape(height: int, width: int, box: tuple[int, int], mode: str) -> tuple[int, int]:
    """The (height, width) an image of `height` x `width` is resized to inside `box`."""
    if mode == "stretch":
        return box
    scale = min(box[0] / height, box[1] / width)
    return (
        min(max(round(height * scale), 1), box[0]),
        min(max(round(width * scale), 1), box[1]),
    )


def resize_pair(
    image: np.ndarray, mask: np.ndarray | None, box: tuple[int, int], mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image (bilinear) and its mask (nearest) to their `scaled_shape` in `box`.

    Both sample at pixel centres (OpenCV's ``INTER_NEAREST`` would shift the mask up to half a
    pixel towards the top left of the image; ``INTER_NEAREST_EXACT`` does not).

    With ``keep`` the result may be smaller than the box: `data.pad_collate` pads each batch
    (image 0, mask the ignore value), as predict pads, so padding is never learnt from.
    """
    import cv2

    height, width = scaled_shape(image.shape[0], image.shape[1], box, mode)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, mask
