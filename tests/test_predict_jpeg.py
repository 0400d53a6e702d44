"""Where predict decodes JPEG files: on a CUDA GPU with nvJPEG where torchvision has it, on the
host otherwise, decided in one place (`decoding.decode_on_device`; its availability check
stood in for here). The device path's steps run on the CPU (torchvision's CPU decoder) and
give the masks of the host path byte for byte; only plain JPEG files take it, and a batch
the device refuses is read on the host."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import segtool.predict.decoding as decoding
import segtool.predict.reading as reading
from segtool.predict.folder import predict_dir
from tests.test_predict_labels import _masks, folder  # noqa: F401  (the fixture's models)

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("available", [True, False])
def test_the_choice_is_made_in_one_place(monkeypatch, available):
    monkeypatch.setattr(decoding, "nvjpeg_available", lambda: available)
    assert decoding.decode_on_device(CUDA, "imagenet", overlays=False) is available
    # Never on the CPU, never where the host needs the picture or its own statistics.
    assert not decoding.decode_on_device(CPU, "imagenet", overlays=False)
    assert not decoding.decode_on_device(CUDA, "imagenet", overlays=True)
    assert not decoding.decode_on_device(CUDA, "image", overlays=False)


def test_this_torchvision_is_seen_as_it_is():
    """The availability check answers from the installed torchvision, without a GPU."""
    import torchvision.io

    has = hasattr(torchvision.io, "decode_jpeg") and hasattr(torch.ops.image, "decode_jpegs_cuda")
    assert decoding.nvjpeg_available() is has


def _jpeg(path, size=(40, 56), mode="RGB", exif=None, cut=0):
    rng = np.random.default_rng(len(path.name))
    small = rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) - cut])
    return path


def test_only_plain_jpeg_files_go_to_the_device(tmp_path):
    rotated = Image.Exif()
    rotated[0x0112] = 6
    assert decoding.jpeg_bytes(_jpeg(tmp_path / "rgb.jpg")) is not None
    assert decoding.jpeg_bytes(_jpeg(tmp_path / "grey.jpg", mode="L")) is not None
    assert decoding.jpeg_bytes(_jpeg(tmp_path / "rot.jpg", exif=rotated)) is None  # EXIF turn
    assert decoding.jpeg_bytes(_jpeg(tmp_path / "cmyk.jpg", mode="CMYK")) is None
    assert decoding.jpeg_bytes(_jpeg(tmp_path / "cut.jpg", cut=40)) is None  # truncated
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    assert decoding.jpeg_bytes(tmp_path / "p.png") is None
    assert decoding.jpeg_bytes(tmp_path / "missing.jpg") is None


def test_a_broken_exif_block_goes_to_the_host_not_to_an_error(tmp_path, monkeypatch):
    """An EXIF block PIL fails on in any way (here struct.error, as a malformed one raises)
    sends the file to the host decoder, which ignores the block as viewers do."""
    import struct

    from PIL import JpegImagePlugin

    def broken(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    path = _jpeg(tmp_path / "rgb.jpg")
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "getexif", broken)
    assert decoding.jpeg_bytes(path) is None


@pytest.fixture
def jpegs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rotated = Image.Exif()
    rotated[0x0112] = 8
    for i, size in enumerate([(40, 56), (64, 64), (40, 56), (33, 70), (64, 64)]):
        _jpeg(images / f"j{i}.jpg", size, mode="L" if i == 3 else "RGB")
    _jpeg(images / "rotated.jpg", (40, 56), exif=rotated)
    Image.new("RGB", (48, 48), (90, 20, 200)).save(images / "flat.png")
    _jpeg(images / "truncated.jpg", cut=200)
    return images


@pytest.mark.parametrize("refused", [False, True])
def test_the_device_path_gives_the_host_paths_masks(folder, jpegs, tmp_path, monkeypatch, refused):  # noqa: F811
    options = {"device": "cpu", "workers": 0, "batch_size": 4, "skip_invalid": True}
    host = predict_dir(folder / "multi", jpegs, tmp_path / "host", **options)
    decoded = []
    decode = decoding.decode

    def counted(data, device):
        decoded.append(len(data))
        return None if refused else decode(data, device)

    monkeypatch.setattr(reading, "decode_on_device", lambda *args: True)  # as on a GPU
    monkeypatch.setattr(reading, "decode", counted)
    device = predict_dir(folder / "multi", jpegs, tmp_path / "device", **options)
    assert sum(decoded) == 5  # the plain JPEG files; the rotated, PNG and cut ones on the host
    assert _masks(tmp_path / "device") == _masks(tmp_path / "host")
    assert len(_masks(tmp_path / "host")) == 7
    assert device.failed == host.failed and len(host.failed) == 1
    assert "truncated.jpg" in host.failed[0]
