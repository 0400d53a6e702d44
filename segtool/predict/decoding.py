"""Where predict decodes JPEG files: on a CUDA device with nvJPEG (torchvision's
``decode_jpeg(device="cuda")``) where torchvision has it, else on the host with PIL.

The choice is made here, once per run (`decode_on_device`), and per file by the readers
(`jpeg_bytes`): only a plain JPEG goes to the device (8-bit RGB or grey, no EXIF rotation,
complete up to its end-of-image marker), so the device decodes the picture PIL would show
(nvJPEG's inverse DCT may put a pixel a grey level away from libjpeg's, as docs/predict.md
says). Anything else, and any batch the device fails to decode, is decoded on the host by
`core.images.load_rgb` (`reading.read_image`), whose checks and messages stay the only ones.
The same steps run on the CPU in the tests (torchvision's CPU decoder gives PIL's pixels).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from segtool.core.images import ImageReadError, open_image

#: EXIF orientation "as stored": no rotation or flip to apply.
UPRIGHT = 1
#: Every complete JPEG ends with this marker (EOI).
END_OF_IMAGE = b"\xff\xd9"


def nvjpeg_available() -> bool:
    """Whether this torchvision decodes JPEG on a CUDA device (its CUDA image operators)."""
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    try:
        return torch.ops.image.decode_jpegs_cuda is not None
    except (AttributeError, RuntimeError):
        return False


def decode_on_device(device: torch.device, normalization: str, overlays: bool) -> bool:
    """The one decision: JPEG files are decoded on the device when it is a CUDA GPU that
    torchvision can decode on, the run normalises with the ImageNet statistics (the
    image's own statistics are computed on the host, from the decoded pixels) and no
    overlay needs the picture on the host."""
    if device.type != "cuda" or normalization != "imagenet" or overlays:
        return False
    return nvjpeg_available()


def jpeg_bytes(path: Path) -> torch.Tensor | None:
    """The file's bytes (uint8) when it is a JPEG the device decodes as PIL shows it (8-bit
    RGB or grey, upright, ending in its end-of-image marker); else None: the host decodes it
    (and says what is wrong with a damaged one)."""
    try:
        data = path.read_bytes()
        with open_image(data) as img:
            plain = img.format == "JPEG" and img.mode in ("RGB", "L")
            upright = _upright(img)
    except (OSError, ValueError, SyntaxError, ImageReadError):
        return None
    if not (plain and upright and data.endswith(END_OF_IMAGE)):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _upright(img: Any) -> bool:
    """Whether the image needs no EXIF turn; a broken EXIF block (any error reading it)
    counts as not upright, so the host decodes the file and ignores the block, as
    `core.images.displayed_size` does."""
    try:
        return img.getexif().get(0x0112, UPRIGHT) == UPRIGHT
    except Exception:
        return False


def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor] | None:
    """JPEG files' bytes decoded on `device` in one call, each a ``(3, H, W)`` uint8 RGB
    tensor there; None when the device refuses any of them (the host then decodes them)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with warnings.catch_warnings():  # torchvision 0.29 announces TorchCodec for this
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None
