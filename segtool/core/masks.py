"""Label masks on disk: 8-bit palette PNGs (16-bit grayscale past 255 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segtool.core.classes import ClassMap
from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path
from segtool.core.multilabel import MARKER

#: zlib settings for mask PNGs: masks are runs of equal values, so run-length matching
#: (Z_RLE) at level 1 gives files smaller than PIL's default in a third of the time.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = 3  # zlib.Z_RLE


def mask_image(mask: np.ndarray, class_map: ClassMap) -> Image.Image:
    """A PIL image of a label array: palette ``P`` for 8-bit maps, ``I;16`` past 255 classes."""
    if class_map.sixteen_bit:
        return Image.fromarray(mask.astype(np.uint16))
    if mask.ndim != 2:
        raise ValueError(f"a label mask must be 2-D, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.size and int(mask.max()) > 255:
            raise ValueError(f"label value {int(mask.max())} does not fit an 8-bit mask")
        mask = mask.astype(np.uint8)
    image = Image.fromarray(mask)
    image.putpalette(class_map.palette())  # turns the image into mode "P", keeping the ids
    return image


def write_mask(path: Path, mask: np.ndarray, class_map: ClassMap, *, atomic: bool = True) -> None:
    """Write a label array as a PNG; atomically (temp file + rename) unless the caller's whole
    output folder is itself renamed into place at the end."""
    image = mask_image(mask, class_map)
    options = {"compress_level": PNG_COMPRESS_LEVEL, "compress_type": PNG_COMPRESS_TYPE}
    if not atomic:
        image.save(path, format="PNG", **options)
        return
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", **options)


def read_mask(path: Path) -> np.ndarray:
    """Read a label PNG as an integer array of ids (uint8 or uint16).

    Raises:
        SegtoolError: unreadable file, or an RGB(A) colour picture instead of a label mask.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if img.info.get(MARKER[0].decode()) == MARKER[1].decode():
                raise SegtoolError(
                    f"{path}: a multi-label mask (bit set per pixel) where an exclusive label "
                    f'mask is expected; add "multilabel": true to classes.json, or rasterize '
                    f"every mask without --multilabel"
                )
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA"):
                raise SegtoolError(
                    f"{path}: a {mode} colour picture, not a label mask; label PNGs hold one class "
                    f"id per pixel (mode P, L or 16-bit); write masks with segtool rasterize"
                )
            array = np.asarray(img)
    except SegtoolError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise SegtoolError(f"{path}: not a readable PNG mask ({exc}); re-export it") from exc
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind not in "ui" or array.ndim != 2:
        raise SegtoolError(f"{path}: mask of type {array.dtype} {array.shape} is not a label mask")
    if array.dtype.itemsize > 2 or array.dtype.kind == "i":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise SegtoolError(f"{path}: mask values outside 0..65535 are not class ids")
        array = array.astype(np.uint16)
    return array
