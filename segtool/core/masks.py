"""Label masks on disk: 8-bit palette PNGs (16-bit grayscale past 255 classes)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segtool.core import png
from segtool.core.classes import ClassMap
from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path
from segtool.core.limits import size_problem

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: PIL's zlib settings for 16-bit masks: masks are runs of equal values, so run-length
#: matching (Z_RLE) gives files smaller than PIL's default in a third of the time.
PNG_COMPRESS_TYPE = 3  # zlib.Z_RLE


def mask_image(mask: np.ndarray, class_map: ClassMap) -> Image.Image:
    """A PIL image of a label array: palette ``P`` for 8-bit maps, ``I;16`` past 255 classes."""
    import numpy as np
    from PIL import Image

    if class_map.sixteen_bit:
        return Image.fromarray(mask.astype(np.uint16))
    image = Image.fromarray(_as_u8(mask))
    image.putpalette(class_map.palette())  # turns the image into mode "P", keeping the ids
    return image


def _as_u8(mask: np.ndarray) -> np.ndarray:
    import numpy as np

    if mask.ndim != 2:
        raise ValueError(f"a label mask must be 2-D, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.size and int(mask.max()) > 255:
            raise ValueError(f"label value {int(mask.max())} does not fit an 8-bit mask")
        mask = mask.astype(np.uint8)
    return mask


@dataclass(frozen=True)
class MaskRows:
    """An 8-bit label mask laid out as PNG rows: each of `height` rows a 0 (PNG filter "none")
    followed by its `width` pixels. Rasterize draws straight into this layout, so a mask is
    encoded and counted without a copy."""

    data: bytes | bytearray | memoryview
    width: int
    height: int

    @classmethod
    def of_image(cls, image: Image.Image) -> MaskRows:
        """The rows of an 8-bit PIL image (mode ``L``)."""
        from PIL import Image

        width, height = image.size
        padded = Image.new("L", (width + 1, height), 0)  # column 0: each row's filter byte
        padded.paste(image, (1, 0))
        return cls(padded.tobytes(), width, height)

    def pixel_counts(self) -> dict[int, int]:
        """Pixels per value present."""
        counts = byte_counts(self.data)
        counts[0] -= self.height  # each row's filter byte
        return {value: n for value, n in enumerate(counts) if n}

    def array(self) -> np.ndarray:
        """The ``(height, width)`` uint8 pixels."""
        import numpy as np

        table = np.frombuffer(self.data, dtype=np.uint8).reshape(self.height, self.width + 1)
        return table[:, 1:]


def byte_counts(data: bytes | bytearray | memoryview) -> list[int]:
    """How many times each value 0..255 occurs in `data` (exactly), as a list of 256 counts.

    PIL's histogram counts a one-band image into one table, and a label mask's long runs of
    one value make each increment wait for the previous one (about 1 ms for 1024 x 768
    pixels). The same bytes seen as a four-band image are counted into four tables, four
    independent chains of increments, in well under half the time; the four are added up.
    """
    from PIL import Image

    words = len(data) // 4
    counts = [0] * 256
    if words:
        view = Image.frombuffer("RGBA", (words, 1), data, "raw", "RGBA", 0, 1)
        bands = view.histogram()
        quarters = (bands[i : i + 256] for i in range(0, 1024, 256))
        counts = [a + b + c + d for a, b, c, d in zip(*quarters, strict=True)]
    for value in bytes(data[4 * words :]):
        counts[value] += 1
    return counts


def encode_mask(
    mask: np.ndarray | MaskRows,
    class_map: ClassMap,
    *,
    level: int = png.DEFAULT_LEVEL,
) -> bytes:
    """The PNG file of a label mask: 8-bit palette (zlib-ng, see `segtool.core.png`), or 16-bit
    grayscale past 255 classes (PIL).

    Args:
        mask: a 2-D array of ids, or an 8-bit mask's `MaskRows` (as rasterize draws it:
            encoded as it is).
        class_map: gives the palette and the depth.
        level: PNG compression level, 0..9 (`segtool.core.png.LEVELS`).

    Raises:
        ValueError: a mask that is not 2-D, holds values too large for 8 bits, or a bad level.
    """
    if class_map.sixteen_bit:
        import io

        import numpy as np

        if level not in png.LEVELS:
            raise ValueError(f"PNG compression level {level} is not one of 0..9")
        if isinstance(mask, MaskRows):
            mask = mask.array()
        buffer = io.BytesIO()
        options = {"compress_level": level, "compress_type": PNG_COMPRESS_TYPE if level == 1 else 0}
        mask_image(np.asarray(mask), class_map).save(buffer, format="PNG", **options)
        return buffer.getvalue()
    if not isinstance(mask, MaskRows):
        import numpy as np

        pixels = _as_u8(mask)
        height, width = pixels.shape
        padded = np.zeros((height, width + 1), dtype=np.uint8)
        padded[:, 1:] = pixels
        mask = MaskRows(padded.tobytes(), width, height)
    palette = bytes(class_map.palette())
    return png.encode_u8(mask.data, mask.width, mask.height, palette, level)


def write_mask(
    path: Path,
    mask: np.ndarray | MaskRows,
    class_map: ClassMap,
    *,
    atomic: bool = True,
    level: int = png.DEFAULT_LEVEL,
) -> None:
    """Write a label mask as a PNG (see `encode_mask`); atomically (temp file + rename) unless
    the caller's whole output folder is itself renamed into place at the end."""
    data = encode_mask(mask, class_map, level=level)
    if not atomic:
        path.write_bytes(data)
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_mask(path: Path) -> np.ndarray:
    """Read a label PNG as an integer array of ids (uint8 or uint16).

    Raises:
        SegtoolError: unreadable file, or an RGB(A) colour picture instead of a label mask.
    """

    import numpy as np

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SegtoolError(f"{path}: not a readable PNG mask ({exc}); re-export it") from exc
    from segtool.core.multilabel import MARKER, is_multilabel_png

    if data[12:16] == b"IHDR":  # the size, before anything is decoded (decompression bombs)
        problem = size_problem(*struct.unpack(">II", data[16:24]))
        if problem:
            raise SegtoolError(f"{path}: not a readable PNG mask: {problem}")
    # A multi-label mask (marked by a text chunk) is refused below, through PIL.
    plain = None if is_multilabel_png(data) else png.decode_u8(data)
    if plain is not None:
        width, height, rows = plain
        table = np.frombuffer(rows, dtype=np.uint8).reshape(height, width + 1)
        if not table[:, 0].any():  # no row filters: the pixels are the rows themselves
            return np.ascontiguousarray(table[:, 1:])
    from segtool.core.images import ImageReadError, open_image

    try:
        with open_image(data) as img:
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
    except ImageReadError as exc:
        raise SegtoolError(f"{path}: not a readable PNG mask: {exc}; re-export it") from exc
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


def binary_255_error(where: Path | str, ignore_index: int) -> SegtoolError | None:
    """The error for masks that hold only 0 and the ignore value 255, else None.

    Such masks are almost always 0/255 binary masks made elsewhere; read as class ids they hold
    background and ignore pixels only, so training learns nothing and every score is empty.
    """
    if ignore_index != 255:
        return None
    return SegtoolError(
        f"{where}: no mask pixel is a foreground class, only 0 and 255 (the ignore value): "
        f"these look like 0/255 binary masks made elsewhere; turn them into a dataset first: "
        f"segtool import-masks IMAGES {where} OUT (255 becomes a class), or save the "
        f"foreground as 1"
    )
