"""The label PNG codec: what it writes PIL reads back exactly, and what PIL writes it reads
exactly (itself where the file is plain, through PIL otherwise)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segtool.core import masks, png
from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError

CMAP = make_class_map(["_background_", "a", "b", "c"])
WIDE = make_class_map([f"c{i}" for i in range(300)])


def pil_pixels(data: bytes) -> tuple[str, np.ndarray]:
    """Mode and pixel values as PIL decodes them: the independent reference."""
    with Image.open(io.BytesIO(data)) as img:
        return img.mode, np.asarray(img)


def _random_mask(height: int, width: int, levels: int, seed: int) -> np.ndarray:
    """Random ids in 0..levels-1, in runs along the rows (as masks have) or pixel by pixel."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, levels, (height, width), dtype=np.uint8)
    if seed % 2:
        mask = np.repeat(mask[:, : max(1, width // 8)], 8, axis=1)[:, :width]
    return np.ascontiguousarray(mask)


label_masks = st.builds(
    _random_mask,
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from([1, 4, 256]),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=60, deadline=None)
@given(mask=label_masks, level=st.sampled_from(list(png.LEVELS)))
def test_written_masks_read_back_exactly_by_pil(mask, level):
    data = masks.encode_mask(mask, CMAP, level=level)
    mode, pixels = pil_pixels(data)
    assert mode == "P"
    np.testing.assert_array_equal(pixels, mask)
    with Image.open(io.BytesIO(data)) as img:
        assert img.getpalette()[: 3 * 4] == list(CMAP.palette()[: 3 * 4])


@settings(max_examples=40, deadline=None)
@given(mask=label_masks)
def test_canvas_and_array_encode_to_the_same_file(mask):
    rows = masks.MaskRows.of_image(Image.fromarray(mask))
    assert masks.encode_mask(rows, CMAP) == masks.encode_mask(mask, CMAP)


def test_compression_levels_trade_size_for_time():
    yy, xx = np.mgrid[0:200, 0:300]
    mask = ((xx // 40 + yy // 30) % 4).astype(np.uint8)
    sizes = {level: len(masks.encode_mask(mask, CMAP, level=level)) for level in (0, 1, 9)}
    assert sizes[0] > 200 * 301  # stored: every row byte is there
    assert sizes[1] < sizes[0] / 20
    assert sizes[9] < sizes[1]  # full deflate also finds the rows repeating
    with pytest.raises(ValueError, match="not one of 0..9"):
        masks.encode_mask(mask, CMAP, level=10)


@settings(max_examples=40, deadline=None)
@given(mask=label_masks, mode=st.sampled_from(["P", "L"]), level=st.sampled_from([0, 1, 6, 9]))
def test_read_mask_matches_pil_on_files_pil_writes(tmp_path_factory, mask, mode, level):
    # PIL writes palette rows unfiltered (read by segtool's own decoder) and grayscale rows
    # with filters (read through PIL): both must give PIL's values.
    image = Image.fromarray(mask)
    if mode == "P":
        image.putpalette(CMAP.palette())
    path = tmp_path_factory.mktemp("m") / "m.png"
    image.save(path, compress_level=level)
    np.testing.assert_array_equal(masks.read_mask(path), pil_pixels(path.read_bytes())[1])


def test_own_files_are_decoded_without_pil(tmp_path, monkeypatch):
    mask = np.arange(60, dtype=np.uint8).reshape(6, 10) % 4
    masks.write_mask(tmp_path / "m.png", mask, CMAP)

    def no_pil(*args, **kwargs):
        raise AssertionError("PIL was asked to decode a plain mask")

    monkeypatch.setattr(Image, "open", no_pil)
    result = masks.read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(result, mask)
    assert result.flags.writeable and result.flags.c_contiguous


def test_sixteen_bit_masks_round_trip(tmp_path):
    mask = np.array([[0, 299, 65535], [7, 256, 1]], dtype=np.uint16)
    masks.write_mask(tmp_path / "w.png", mask, WIDE)
    assert png.decode_u8((tmp_path / "w.png").read_bytes()) is None  # 16-bit: PIL's job
    np.testing.assert_array_equal(masks.read_mask(tmp_path / "w.png"), mask)


def test_low_bit_depth_palette_is_read_through_pil(tmp_path):
    mask = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    image = Image.fromarray(mask * 255).convert("1")
    image.save(tmp_path / "b.png")
    assert png.decode_u8((tmp_path / "b.png").read_bytes()) is None
    np.testing.assert_array_equal(
        masks.read_mask(tmp_path / "b.png"), pil_pixels((tmp_path / "b.png").read_bytes())[1]
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],  # cut short
        lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:],  # a flipped byte: checksum fails
    ],
)
def test_damaged_files_fail_with_one_clear_error(tmp_path, damage):
    mask = (np.arange(400, dtype=np.uint8).reshape(20, 20) // 50) % 4
    data = masks.encode_mask(mask, CMAP)
    assert png.decode_u8(damage(data)) is None
    (tmp_path / "d.png").write_bytes(damage(data))
    with pytest.raises(SegtoolError, match=r"d\.png: not a readable PNG mask"):
        masks.read_mask(tmp_path / "d.png")


def _with_rows_deflated(rows: bytes, width: int, height: int) -> bytes:
    """A palette PNG whose IDAT holds `rows` as given (intact chunk checksums)."""
    header = png.struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"PLTE", bytes(12)), (b"IDAT", rows), (b"IEND", b"")]
    return png.SIGNATURE + b"".join(png._chunk(kind, body) for kind, body in chunks)


def test_deflate_data_of_the_wrong_length_is_not_decoded():
    rows = bytes([0, 1, 2, 3, 0, 3, 2, 1])  # 2 rows of 3 pixels
    whole = png.zlib_ng.compress(rows)
    assert png.decode_u8(_with_rows_deflated(whole, 3, 2)) == (3, 2, rows)
    assert png.decode_u8(_with_rows_deflated(whole + b"tail", 3, 2)) == (3, 2, rows)
    assert png.decode_u8(_with_rows_deflated(whole[:-5], 3, 2)) is None  # stream cut short
    longer = png.zlib_ng.compress(rows + bytes([0, 1, 1, 1]))  # one row more than the header
    assert png.decode_u8(_with_rows_deflated(longer, 3, 2)) is None
    shorter = png.zlib_ng.compress(rows[:4])
    assert png.decode_u8(_with_rows_deflated(shorter, 3, 2)) is None
    assert png.decode_u8(_with_rows_deflated(b"not deflate", 3, 2)) is None


def test_a_file_without_its_end_chunk_reads_as_pil_reads_it(tmp_path):
    mask = (np.arange(400, dtype=np.uint8).reshape(20, 20) // 50) % 4
    data = masks.encode_mask(mask, CMAP)[:-12]
    assert png.decode_u8(data) is None
    (tmp_path / "e.png").write_bytes(data)
    np.testing.assert_array_equal(masks.read_mask(tmp_path / "e.png"), pil_pixels(data)[1])


def test_missing_file_and_colour_picture(tmp_path):
    with pytest.raises(SegtoolError, match="not a readable PNG mask"):
        masks.read_mask(tmp_path / "none.png")
    Image.new("RGB", (4, 3)).save(tmp_path / "rgb.png")
    with pytest.raises(SegtoolError, match="colour picture"):
        masks.read_mask(tmp_path / "rgb.png")


# --- counting the values of a mask ------------------------------------------------------------


def _runs(values: list[int], lengths: list[int]) -> bytes:
    """Bytes in runs of equal values, as label masks hold them."""
    return b"".join(bytes([v]) * n for v, n in zip(values, lengths, strict=False))


byte_strings = st.binary(max_size=600) | st.builds(
    _runs,
    st.lists(st.integers(0, 255), max_size=30),
    st.lists(st.integers(0, 400), max_size=30),
)


@settings(max_examples=150, deadline=None)
@given(data=byte_strings, kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_byte_counts_match_numpy(data, kind):
    expected = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).tolist()
    assert masks.byte_counts(kind(data)) == expected


@settings(max_examples=60, deadline=None)
@given(mask=label_masks)
def test_counts_of_mask_rows_are_the_pixels_per_value(mask):
    pixels = Image.fromarray(mask)
    values, counts = np.unique(mask, return_counts=True)
    expected = dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert masks.MaskRows.of_image(pixels).pixel_counts() == expected
