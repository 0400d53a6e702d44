"""Reading images as they are displayed (EXIF orientation applied), cheaply where we can."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from segtool.core.constants import IMAGE_SUFFIXES
from segtool.core.errors import SegtoolError
from segtool.core.files import list_files
from segtool.core.finite import non_finite_problem
from segtool.core.limits import max_pixels, size_problem

if TYPE_CHECKING:
    import numpy as np

#: EXIF orientations that turn the picture by 90 degrees (width and height swap).
_TRANSPOSED = {5, 6, 7, 8}
#: The last 12 bytes of every complete PNG: the IEND chunk.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: The end-of-image marker that closes a complete JPEG.
_JPEG_END = b"\xff\xd9"
#: File suffix for images that only exist as labelme's embedded imageData.
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


class ImageReadError(ValueError):
    """An image cannot be read; the message says why (no file name)."""


def check_pixels(img: Image.Image) -> None:
    """Refuse an image larger than the pixel limit before its data is decoded.

    Raises:
        ImageReadError: naming the size, the limit and the option that raises it.
    """
    problem = size_problem(*img.size)
    if problem:
        raise ImageReadError(problem)


def open_image(source: Path | bytes) -> Image.Image:
    """Open an image (header only) and check it against the pixel limit.

    Raises:
        ImageReadError: missing, unreadable, or over the pixel limit.
    """
    try:
        Image.MAX_IMAGE_PIXELS = max(max_pixels(), 1) // 2 + 1  # PIL raises at twice this
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError as exc:
        raise ImageReadError("the image file does not exist") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{exc}; if the image is genuine, raise --max-pixels") from exc
    except Image.UnidentifiedImageError as exc:
        if not isinstance(source, bytes):
            raise ImageReadError(f"not a readable image ({exc})") from exc
        # PIL names the in-memory buffer (<_io.BytesIO object at 0x...>): say what it held.
        raise ImageReadError(
            "not a readable image (the embedded image is in no format segtool reads)"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"not a readable image ({exc})") from exc
    try:
        check_pixels(img)
    except ImageReadError:
        img.close()
        raise
    return img


_open = open_image


def _check_complete(img: Image.Image, source: Path | bytes) -> None:
    """Raise if the image data is cut short, decoding as little as the format allows."""
    try:
        if img.format == "JPEG":
            if _tail(source, 2) == _JPEG_END:
                return
            # No end marker (a cut-off file, or a camera's trailer after it): a 1/8-scale decode
            # runs through every entropy-coded block but skips the inverse DCT, so it fails on
            # a cut-off file at a fraction of a full decode's cost.
            img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        elif img.format == "PNG":
            if _tail(source, 12) != _PNG_END:
                raise OSError("image file is truncated (no IEND chunk)")
        else:
            img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"the image is damaged or truncated ({exc})") from exc


def _tail(source: Path | bytes, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[-n:]
    with open(source, "rb") as fh:
        fh.seek(max(0, source.stat().st_size - n))
        return fh.read()


def displayed_size(source: Path | bytes, *, verify: bool = True) -> tuple[int, int, str]:
    """(width, height, format) of an image as a viewer shows it, EXIF orientation applied.

    Reads the header (and, with `verify`, checks the data is complete) without a full decode.

    Raises:
        ImageReadError: missing, unreadable, damaged or truncated image.
    """
    with _open(source) as img:
        width, height = img.size
        fmt = img.format or ""
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block is ignored, as viewers do
            orientation = 1
        if verify:
            _check_complete(img, source)
    if orientation in _TRANSPOSED:
        width, height = height, width
    return width, height, fmt


def list_images(folder: Path) -> list[Path]:
    """The image files in `folder` (suffixes of `IMAGE_SUFFIXES`, any case, not hidden), sorted."""
    return list_files(folder, IMAGE_SUFFIXES)


def rgb_array(img: Image.Image, where: str) -> np.ndarray:
    """A PIL image as an ``(H, W, 3)`` uint8 array: grey/RGBA converted as PIL converts,
    16-bit and float images stretched from their own minimum and maximum to 0..255.

    Raises:
        SegtoolError: a float image holding NaN or infinity (`where` names it).
    """
    import numpy as np

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        problem = non_finite_problem(array, "pixel")
        if problem:
            raise SegtoolError(f"{where}: {problem}")
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        array = ((array - low) * scale).round().astype(np.uint8)
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def load_rgb(path: Path) -> np.ndarray:
    """An image as an ``(H, W, 3)`` uint8 array as displayed: EXIF applied, grey/RGBA/16-bit
    converted to 8-bit RGB.

    Raises:
        SegtoolError: the image cannot be read.
    """
    from PIL import ImageOps

    try:
        with open_image(path) as img:
            return rgb_array(ImageOps.exif_transpose(img), str(path))
    except ImageReadError as exc:
        raise SegtoolError(f"{path}: {exc}; re-export or remove it") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise SegtoolError(f"{path}: not a readable image ({exc}); re-export or remove it") from exc
