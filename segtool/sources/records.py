"""What every export reader hands to the drawing step: one record per image.

A record names the image (as the export wrote it and where segtool found it), the size the
export recorded, and its shapes in drawing order. Problems with one image's annotations are
kept on the record (``problem``) so that every problem of a file can be listed together and
``--skip-invalid`` can skip just that image.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from segtool.core.constants import BACKGROUND_NAME
from segtool.sources.shapes import Shape

#: Names a source may give the background; both become class 0 (labelme's ``_background_``).
BACKGROUND_ALIASES = frozenset({BACKGROUND_NAME, "background"})


@dataclass(frozen=True)
class RleShape(Shape):
    """A COCO segmentation (polygons or RLE), drawn through pycocotools as ``annToMask`` does;
    ``crowd`` marks an ``iscrowd: 1`` region (many objects: never one instance)."""

    segmentation: Any = None
    crowd: bool = False

    def inside(self, width: int, height: int) -> bool:
        """True unless a polygon vertex lies off the image (RLE masks always fit it)."""
        if not isinstance(self.segmentation, list):
            return True
        for poly in self.segmentation:
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < 0 or min(ys) < 0 or max(xs) > width - 1 or max(ys) > height - 1:
                return False
        return True


@dataclass(frozen=True)
class ImageRecord:
    """One image of an export file and its shapes, in the order they are drawn.

    ``image`` is the image file inside the image folder (None when the export names none that
    can be used: see ``problem``); ``data`` holds an image embedded in the export (VIA 1.x);
    ``classes`` the export's own class names in id order, when it fixes the ids (YOLO's
    ``data.yaml``: index i is class i + 1), else empty and the ids are derived.
    """

    export: Path
    name: str
    image: Path | None
    width: int | None
    height: int | None
    shapes: tuple[Shape, ...] = ()
    data: bytes | None = None
    problem: str | None = None
    warnings: tuple[str, ...] = field(default=())
    classes: tuple[str, ...] = field(default=(), repr=False)

    @property
    def labels(self) -> set[str]:
        """Every label the image's shapes use."""
        return {shape.label for shape in self.shapes}

    @property
    def stem(self) -> str:
        """The mask's name: the image file's stem."""
        return PurePosixPath(self.name.replace("\\", "/")).stem


def canonical_label(name: str) -> str:
    """A class name as segtool keys it: any background alias becomes ``_background_``."""
    return BACKGROUND_NAME if name.strip().lower() in BACKGROUND_ALIASES else name


#: The fix for an image name that leaves the image folder (VIA files).
RELATIVE_NAMES = "file names must be relative to the image folder (--image-dir)"


class PathEscapeError(ValueError):
    """An image path in an export points outside the image folder."""


def image_in_folder(folder: Path, name: str) -> Path:
    """The file an export's relative image path names inside `folder`.

    Backslashes count as separators (Windows exports). An absolute path, a drive letter or
    ``..`` steps that leave `folder` are refused, so no path in a file reaches elsewhere.

    Raises:
        PathEscapeError: the path leaves `folder`.
    """
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise PathEscapeError(f"image path {name!r} is absolute")
    normal = posixpath.normpath(text)
    if normal in ("", ".") or text.endswith("/"):
        raise PathEscapeError(f"image path {name!r} names no file")
    if normal == ".." or normal.startswith("../"):
        raise PathEscapeError(f"image path {name!r} leaves the image folder")
    return folder / normal


def is_file(path: Path) -> bool:
    """``path.is_file()``, False too for a name the system refuses (too long, a NUL byte), so
    that an annotation naming such a file is "not found" rather than the end of the run."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def basename_of(reference: str) -> str:
    """The file name at the end of a path or URL (``/data/upload/3/a.jpg`` -> ``a.jpg``)."""
    text = reference.replace("\\", "/")
    if "://" in text or text.startswith("/data/"):
        text = unquote(urlparse(text).path)
    if "?d=" in reference:  # Label Studio's local-files URLs carry the path in the query
        text = unquote(reference.split("?d=", 1)[1]).replace("\\", "/")
    return text.rstrip("/").rsplit("/", 1)[-1]


def finite_number(value: Any) -> bool:
    """True for an int or float that is neither bool, NaN, infinite nor an integer too large
    for a float (JSON allows 400-digit integers; PIL and pycocotools cannot take them)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return value * 0.0 == 0  # false for NaN and infinity
    except OverflowError:  # an integer past 1.8e308
        return False


def decode_base64(data: str) -> bytes:
    """The bytes of base64 text, a ``data:...;base64,`` URI's prefix dropped (embedded images).

    Raises:
        ValueError: the text is not base64.
    """
    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the embedded image is not valid base64 ({exc})") from exc


class JsonFileError(ValueError):
    """An export file that cannot be parsed as JSON; the message says why, without the path."""


def load_json(path: Path) -> Any:
    """Parse an export's JSON: UTF-8 (with or without a byte-order mark), UTF-16 or UTF-32.

    Raises:
        JsonFileError: unreadable, not text, not JSON (with the line and column), or nested
            too deeply to be an export.
    """
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise JsonFileError(f"cannot read the file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise JsonFileError(f"not valid JSON ({exc.msg}: {where})") from exc
    except RecursionError as exc:
        raise JsonFileError("JSON nested too deeply to be an export") from exc


def json_text(value: Any, limit: int = 60) -> str:
    """`value` as the export file spells it (``false``, ``"yes"``, ``null``), not as Python
    prints it (``False``, ``'yes'``, ``None``), cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
