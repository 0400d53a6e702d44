"""Multi-label masks: one PNG per image whose pixel value is a bit set of classes.

Class id c (1 <= c <= K-1) is bit c-1; the top bit of the value marks ignore pixels. The depth
follows the number of foreground classes: an 8-bit grayscale PNG for up to 7, 16-bit grayscale
for up to 15, and a 16-bit RGBA PNG read as one 64-bit value (R bits 0-15, G 16-31, B 32-47,
A 48-63) for up to 63. Every mask segtool writes carries a ``segtool: multilabel`` text chunk, so
an exclusive label mask and a multi-label one are never confused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from segtool.core import png
from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path

#: Most foreground classes a multi-label mask holds (63 class bits + the ignore bit).
MAX_MULTILABEL_CLASSES = 63
#: The PNG text chunk (keyword, text) that marks a multi-label mask.
MARKER = (b"segtool", b"multilabel")
#: Preview colour of ignore pixels (the VOC palette's colour for 255).
IGNORE_COLOR = (224, 224, 192)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MultilabelValueError(ValueError):
    """A multi-label mask sets a bit for a class the class map does not have."""

    def __init__(self, bit: int, num_foreground: int) -> None:
        self.bit = bit
        super().__init__(
            f"bit {bit} (class id {bit + 1}) is set, but the class map has {num_foreground} "
            f"foreground class(es) (bits 0..{num_foreground - 1})"
        )


def mask_bits(num_foreground: int) -> int:
    """Bits per pixel of the multi-label masks for this many foreground classes: 8, 16 or 64.

    Raises:
        SegtoolError: more than 63 foreground classes.
    """
    if num_foreground > MAX_MULTILABEL_CLASSES:
        raise SegtoolError(
            f"{num_foreground} foreground classes is more than a multi-label mask holds "
            f"({MAX_MULTILABEL_CLASSES}); merge classes or use exclusive masks"
        )
    return 8 if num_foreground <= 7 else 16 if num_foreground <= 15 else 64


def value_dtype(num_foreground: int) -> np.dtype:
    """The numpy type of the bit-set values: uint8, uint16 or uint64."""
    return np.dtype({8: np.uint8, 16: np.uint16, 64: np.uint64}[mask_bits(num_foreground)])


def ignore_value(num_foreground: int) -> int:
    """The ignore bit as a value: 128, 32768 or 2**63."""
    return 1 << (mask_bits(num_foreground) - 1)


def encode(planes: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Boolean planes ``(C, H, W)`` (plane i is class id i+1) and an ignore array -> bit values.

    Returns:
        An ``(H, W)`` array of the type `value_dtype` (C) gives.
    """
    num_foreground = planes.shape[0]
    dtype = value_dtype(num_foreground)
    values = np.zeros(planes.shape[1:], dtype=dtype)
    for bit in range(num_foreground):
        values |= planes[bit].astype(dtype) << dtype.type(bit)
    if ignore is not None:
        values[ignore] |= dtype.type(ignore_value(num_foreground))
    return values


def decode(values: np.ndarray, num_foreground: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit values -> (boolean planes ``(C, H, W)``, boolean ignore ``(H, W)``)."""
    dtype = values.dtype.type
    planes = np.empty((num_foreground, *values.shape), dtype=bool)
    for bit in range(num_foreground):
        planes[bit] = (values & dtype(1 << bit)) != 0
    ignore = (values & dtype(ignore_value(num_foreground))) != 0
    return planes, ignore


def check_bits(values: np.ndarray, num_foreground: int) -> None:
    """Raise `MultilabelValueError` for a bit set for a class the map does not have."""
    used = int(np.bitwise_or.reduce(values, axis=None)) if values.size else 0
    extra = used & ~((1 << num_foreground) - 1) & ~ignore_value(num_foreground)
    if extra:
        raise MultilabelValueError((extra & -extra).bit_length() - 1, num_foreground)


# --- PNG files ------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(values: np.ndarray) -> bytes:
    """The PNG file of a bit-value array (uint8, uint16 or uint64), marked as multi-label."""
    if values.dtype == np.uint8:  # the common case: through the label PNG codec (zlib-ng)
        height, width = values.shape
        rows = np.zeros((height, width + 1), dtype=np.uint8)  # column 0: each row's filter byte
        rows[:, 1:] = values
        return _marked(png.encode_u8(rows.tobytes(), width, height, None))
    if values.dtype == np.uint64:
        # One 64-bit value as four 16-bit channels; OpenCV stores channels in BGRA order.
        rgba = values[..., None] >> np.array([0, 16, 32, 48], dtype=np.uint64)
        image = (rgba & np.uint64(0xFFFF)).astype(np.uint16)[..., [2, 1, 0, 3]]
    elif values.dtype == np.uint16:
        image = values
    else:
        raise ValueError(f"multi-label values must be uint8, uint16 or uint64, not {values.dtype}")
    import cv2  # loaded here: exclusive masks (rasterize, evaluate) never need it

    # zlib level 1 with run-length matching and no row filter: masks are runs of equal values,
    # and trying PNG's filters on every row would cost more than it saves.
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        1,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
        cv2.IMWRITE_PNG_FILTER,
        cv2.IMWRITE_PNG_FILTER_NONE,
    ]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image), params)
    if not ok:
        raise ValueError("OpenCV could not encode the mask")
    return _marked(encoded.tobytes())


def _marked(data: bytes) -> bytes:
    """PNG bytes with the multi-label marker chunk right after the header."""
    end_of_header = len(_PNG_SIGNATURE) + 25  # the IHDR chunk is always first and 25 bytes
    return data[:end_of_header] + _chunk(b"tEXt", b"\0".join(MARKER)) + data[end_of_header:]


def write_multilabel_mask(path: Path, values: np.ndarray, *, atomic: bool = True) -> None:
    """Write a bit-value array as a multi-label PNG (atomically unless the caller's folder is)."""
    data = png_bytes(values)
    if not atomic:
        path.write_bytes(data)
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _png_header(data: bytes) -> tuple[int, int, bool]:
    """(bit depth, colour type, has the multi-label marker) of a PNG file's bytes."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    marked = b"tEXt" + b"\0".join(MARKER) in data[: data.find(b"IDAT")]
    return data[24], data[25], marked


def is_multilabel_png(data: bytes) -> bool:
    """True when PNG bytes carry segtool's multi-label marker."""
    try:
        return _png_header(data)[2]
    except (ValueError, IndexError):
        return False


def read_multilabel_values(path: Path, num_classes: int) -> np.ndarray:
    """Read a multi-label PNG as bit values (uint8, uint16 or uint64), checked against K.

    Args:
        path: the PNG.
        num_classes: K, background included (K-1 foreground classes, one bit each).

    Raises:
        SegtoolError: unreadable file, an exclusive (palette) label mask, a depth that does not
            fit K, or a bit for a class the map does not have.
    """
    num_foreground = num_classes - 1
    bits = mask_bits(num_foreground)
    try:
        data = path.read_bytes()
        depth, colour, _ = _png_header(data)
    except (OSError, ValueError, IndexError) as exc:
        raise SegtoolError(f"{path}: not a readable PNG mask ({exc}); re-export it") from exc
    got = {(8, 0): 8, (16, 0): 16, (16, 6): 64}.get((depth, colour))
    if colour == 3:
        raise SegtoolError(
            f"{path}: an exclusive label mask (palette PNG, one class per pixel) in a multi-label "
            f'dataset (classes.json has "multilabel": true); rasterize every mask with '
            f"--multilabel, or drop the flag"
        )
    if got != bits:
        kind = {8: "8-bit grayscale", 16: "16-bit grayscale", 64: "16-bit RGBA"}
        found = kind.get(got, f"{depth}-bit colour type {colour}")
        raise SegtoolError(
            f"{path}: a {found} PNG, but multi-label masks with {num_foreground} foreground "
            f"class(es) are {kind[bits]}; re-rasterize with the dataset's classes.json"
        )
    image = _decode(data)
    if image is None:
        raise SegtoolError(f"{path}: not a readable PNG mask; re-export it")
    if bits == 64:
        rgba = image[..., [2, 1, 0, 3]].astype(np.uint64)  # OpenCV returns BGRA
        shifts = np.array([0, 16, 32, 48], dtype=np.uint64)
        image = np.bitwise_or.reduce(rgba << shifts, axis=-1)
    try:
        check_bits(image, num_foreground)
    except MultilabelValueError as exc:
        raise SegtoolError(f"{path}: {exc}; fix the mask or the class map") from exc
    return image


def _decode(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG: plain 8-bit files through the label PNG codec, others OpenCV."""
    plain = png.decode_u8(data)
    if plain is not None:
        width, height, rows = plain
        table = np.frombuffer(rows, dtype=np.uint8).reshape(height, width + 1)
        if not table[:, 0].any():  # no row filters: the pixels are the rows themselves
            return np.ascontiguousarray(table[:, 1:])
    import cv2  # loaded here: exclusive masks (rasterize, evaluate) never need it

    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


def read_multilabel_mask(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a multi-label mask as boolean planes and an ignore array.

    Args:
        path: a multi-label PNG (8-bit, 16-bit or 16-bit RGBA; see the module docstring).
        num_classes: K, background included.

    Returns:
        (planes ``(K-1, H, W)`` bool, plane i being class id i+1; ignore ``(H, W)`` bool).

    Raises:
        SegtoolError: as `read_multilabel_values`.
    """
    return decode(read_multilabel_values(path, num_classes), num_classes - 1)


# --- colour preview -------------------------------------------------------------------------


def preview(
    values: np.ndarray, num_foreground: int, colors: list[tuple[int, int, int]] | np.ndarray
) -> np.ndarray:
    """An RGB picture of a bit-value mask: each class's colour, blended (averaged) where classes
    overlap, black where there is none, `IGNORE_COLOR` on ignore pixels.

    Args:
        values: bit values.
        num_foreground: K-1.
        colors: the K class colours (index 0, background, is not used).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    palette = np.asarray(colors, dtype=np.float32)[1 : num_foreground + 1]
    planes, ignore = decode(values, num_foreground)
    weights = planes.reshape(num_foreground, -1).astype(np.float32)
    total = weights.sum(axis=0)
    mixed = (weights.T @ palette) / np.maximum(total, 1)[:, None]
    rgb = np.rint(mixed).astype(np.uint8).reshape(*values.shape, 3)
    rgb[ignore] = IGNORE_COLOR
    return rgb
