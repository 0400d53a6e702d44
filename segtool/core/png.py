"""8-bit one-channel PNGs (label masks) encoded and decoded directly with zlib-ng.

A label mask is long runs of equal bytes. Written as PNG rows without a filter and deflated
with run-length matching, it is as small as a default PNG; zlib-ng does that several times
faster than the zlib inside PIL, and inflates several times faster too. Only the plain case is
handled here: 8-bit palette or grayscale, not interlaced, every row unfiltered (which is what
segtool and PIL write for palette images). `decode_u8` answers None for anything else (16-bit,
filtered rows, other colour types, a damaged file) and the caller reads it with PIL, which
also gives damaged files their error message.
"""

from __future__ import annotations

import struct

from zlib_ng import zlib_ng

#: The first eight bytes of every PNG file.
SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Compression levels: 0 stores the rows as they are, 1 (the default) deflates with
#: run-length matching only (fast, and small on label masks), 2-9 full deflate at that level.
LEVELS = range(10)
DEFAULT_LEVEL = 1
_Z_RLE = 3
_GRAY, _PALETTE = 0, 3


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib_ng.crc32(body, zlib_ng.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_u8(
    rows: bytes, width: int, height: int, palette: bytes | None, level: int = DEFAULT_LEVEL
) -> bytes:
    """A whole PNG file holding 8-bit pixels.

    Args:
        rows: ``height`` rows of ``1 + width`` bytes, each a 0 (PNG filter "none") followed by
            the row's pixels.
        width: pixels per row.
        height: rows.
        palette: up to 768 bytes of RGB triples for a palette image, or None for grayscale.
        level: see `LEVELS`.

    Raises:
        ValueError: a level outside 0..9 or rows of the wrong length.
    """
    if level not in LEVELS:
        raise ValueError(f"PNG compression level {level} is not one of 0..9")
    if len(rows) != height * (width + 1):
        raise ValueError(f"{len(rows)} bytes of rows do not make {height} rows of {width} pixels")
    strategy = _Z_RLE if level == 1 else 0
    deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 15, 9, strategy)
    data = deflate.compress(rows) + deflate.flush()
    colour = _GRAY if palette is None else _PALETTE
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    if palette is not None:
        parts.append(_chunk(b"PLTE", palette))
    parts += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return b"".join(parts)


def decode_u8(data: bytes) -> tuple[int, int, bytes] | None:
    """(width, height, rows) of a plain 8-bit one-channel PNG, rows as `encode_u8` takes them
    (each starting with its filter byte, which the caller checks is 0); None when the file is
    not that plain case, or damaged (wrong checksum, cut short, bad deflate data)."""
    if not data.startswith(SIGNATURE):
        return None
    pos, header, parts = len(SIGNATURE), None, []
    while True:
        if pos + 12 > len(data):
            return None  # cut short before IEND
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            return None
        body = data[pos + 8 : end]
        if zlib_ng.crc32(body, zlib_ng.crc32(kind)) != struct.unpack_from(">I", data, end)[0]:
            return None
        if kind == b"IHDR" and length == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            break
        pos = end + 4
    if header is None:
        return None
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (_GRAY, _PALETTE) or interlace:
        return None
    size = height * (width + 1)
    # A decompressor told the size inflates about three times faster than one-shot
    # ``decompress``, which grows its output step by step.
    inflate = zlib_ng.decompressobj()
    try:
        rows = inflate.decompress(b"".join(parts), size)
    except zlib_ng.error:
        return None
    if not inflate.eof or len(rows) != size:  # cut short, or more rows than the header says
        return None
    return width, height, rows
