"""The pixel limit: images (and masks) larger than this are refused before they are decoded.

A PNG of a few kilobytes can claim 400 M pixels (a decompression bomb). The limit defaults to
PIL's own and is raised with ``--max-pixels``; it travels to worker processes in an
environment variable. No numpy, no PIL: every reader can ask cheaply.
"""

from __future__ import annotations

import os

#: Largest image (width x height) decoded unless --max-pixels raises it (PIL's bomb limit).
DEFAULT_MAX_PIXELS = 178_956_970
#: Environment variable carrying --max-pixels to worker processes.
MAX_PIXELS_ENV = "SEGTOOL_MAX_PIXELS"


def max_pixels() -> int:
    """The pixel limit in force (--max-pixels, inherited by worker processes)."""
    try:
        return int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process and the workers it starts (None: the default)."""
    if limit is None:
        os.environ.pop(MAX_PIXELS_ENV, None)
    else:
        os.environ[MAX_PIXELS_ENV] = str(int(limit))


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused (naming the option that raises the limit), or None."""
    limit = max_pixels()
    if width * height <= limit:
        return None
    return (
        f"{width} x {height} = {width * height:,} pixels is over the limit of {limit:,} "
        f"(a decompression bomb?); if the image is genuine, raise it with --max-pixels"
    )


def available_ram() -> int:
    """Bytes of memory free for a new allocation now (MemAvailable; 4 GiB when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30
