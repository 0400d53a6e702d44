"""The class map: which id each label gets, its colour, and the ignore value.

One map is shared by every step (rasterize, train, predict, evaluate). It is read from
labelme's ``labels.txt`` or from a ``classes.json``, or derived from the annotations, and
always written as ``classes.json``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core.constants import (
    BACKGROUND_NAME,
    BINARY,
    IGNORE_INDEX,
    IGNORE_INDEX_16,
    IGNORE_LABEL,
    MAX_CLASSES_8BIT,
    MAX_CLASSES_16BIT,
    MULTICLASS,
    MULTILABEL,
)
from segtool.core.errors import SegtoolError
from segtool.core.files import read_json, write_json

if TYPE_CHECKING:
    import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (the one labelme uses), as an ``(n, 3)`` uint8 array."""
    import numpy as np

    return np.array(_voc_colors(n), dtype=np.uint8).reshape(n, 3)


@lru_cache(maxsize=8)
def _voc_colors(n: int) -> tuple[tuple[int, int, int], ...]:
    """The first `n` VOC colours: in plain Python for an 8-bit map (reading a class map needs
    no numpy), vectorized past 256 classes."""
    if n > 256:
        import numpy as np

        ids = np.arange(n, dtype=np.int64)
        cmap = np.zeros((n, 3), dtype=np.int64)
        for bit in range(8):
            for channel in range(3):
                cmap[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
        return tuple(map(tuple, cmap.tolist()))
    colors = []
    for i in range(n):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((i >> (3 * bit + channel)) & 1) << (7 - bit)
        colors.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colors)


@dataclass(frozen=True)
class ClassMap:
    """Class names by id (0 is background), their colours and the ignore value.

    `background_scored`: id 0 is a real class that evaluate scores and the all-class mean
    covers (CamVid's sky, ISBI's membrane); by default id 0 is background, left out of the
    foreground mean.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = field(default=())
    ignore_index: int = IGNORE_INDEX
    #: Masks are bit sets (each pixel may hold several classes); see `segtool.core.multilabel`.
    multilabel: bool = False
    background_scored: bool = False

    def __post_init__(self) -> None:
        if not self.colors:
            object.__setattr__(self, "colors", _voc_colors(len(self.names)))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        """K, the number of classes including background."""
        return len(self.names)

    @property
    def sixteen_bit(self) -> bool:
        """True when exclusive masks need 16-bit PNGs (more than 255 classes)."""
        return len(self.names) > MAX_CLASSES_8BIT

    @property
    def num_foreground(self) -> int:
        """K-1, the classes other than background (the bits of a multi-label mask)."""
        return len(self.names) - 1

    def value_of(self) -> dict[str, int]:
        """Label name -> pixel value, with ``__ignore__`` mapped to the ignore value."""
        table = {name: i for i, name in enumerate(self.names)}
        table[IGNORE_LABEL] = self.ignore_index
        return table

    def palette(self) -> list[int]:
        """A flat 768-value PNG palette: class colours, then the VOC colours for other values."""
        return list(_palette(self.colors))

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 picture of a label array in the palette's colours (values past
        255 take the colour of 255)."""
        import numpy as np

        palette = np.array(_palette(self.colors), dtype=np.uint8).reshape(-1, 3)
        return palette[np.clip(labels, 0, 255)]

    def ids_in(self, target: ClassMap) -> tuple[np.ndarray | None, list[str]]:
        """How masks in this map's ids are put in `target`'s ids: matched by class name.

        Returns:
            (a lookup table indexed by this map's values, the ignore value included; None when
            the ids already agree: this map's names are the first of `target`'s and the ignore
            values are equal), and the names `target` lacks (then the table is None).
        """
        import numpy as np

        missing = [name for name in self.names if name not in target.names]
        same = self.names == target.names[: len(self.names)]
        if missing or (same and self.ignore_index == target.ignore_index):
            return None, missing
        # Other values stay as they are, so a value outside the map is still named.
        table = np.arange(1 << 16, dtype=np.uint16)
        for i, name in enumerate(self.names):
            table[i] = target.names.index(name)
        table[self.ignore_index] = target.ignore_index
        return table, []

    def to_json(self) -> dict:
        """The ``classes.json`` document (``"multilabel": true`` only for multi-label maps)."""
        doc = {
            "classes": [
                {"id": i, "name": name, "color": list(self.colors[i])}
                for i, name in enumerate(self.names)
            ],
            "ignore_index": self.ignore_index,
            "background_scored": self.background_scored,
        }
        if self.multilabel:
            doc["multilabel"] = True
        return doc

    def save(self, path: Path) -> None:
        """Write ``classes.json`` to ``path`` (atomically)."""
        write_json(path, self.to_json())


def mode_for(num_classes: int, multilabel: bool = False) -> str:
    """The one rule for binary models: K = 2 is ``binary`` (one sigmoid channel: foreground
    probability), more classes are ``multiclass`` (softmax over K channels); multi-label maps
    are ``multilabel`` (one sigmoid channel per foreground class)."""
    if multilabel:
        return MULTILABEL
    return BINARY if num_classes == 2 else MULTICLASS


def out_channels(num_classes: int, multilabel: bool = False) -> int:
    """Model output channels for K classes: 1 in binary mode, K-1 in multi-label mode, K
    otherwise."""
    if multilabel:
        return num_classes - 1
    return 1 if mode_for(num_classes) == BINARY else num_classes


@lru_cache(maxsize=8)
def _palette(colors: tuple[tuple[int, int, int], ...]) -> tuple[int, ...]:
    pal = list(_voc_colors(256))
    pal[: len(colors[:256])] = colors[:256]
    return tuple(v for color in pal for v in color)


def make_class_map(
    names: Iterable[str], *, source: str = "class list", multilabel: bool = False
) -> ClassMap:
    """Build a map from names in id order (background first), picking the mask depth.

    Args:
        names: class names, background first.
        source: where the names came from, for error messages.
        multilabel: a map for bit-set masks; its ignore value is the mask's top bit.

    Raises:
        SegtoolError: duplicate names or more classes than the masks hold.
    """
    names = tuple(names)
    _check_unique(names, source)
    if multilabel:
        try:
            from segtool.core.multilabel import ignore_value  # numpy: multi-label maps only

            ignore = ignore_value(len(names) - 1)
        except SegtoolError as exc:
            raise SegtoolError(f"{source}: {exc}") from None
        return ClassMap(names=names, ignore_index=ignore, multilabel=True)
    if len(names) > MAX_CLASSES_16BIT:
        raise SegtoolError(
            f"{source}: {len(names)} classes is more than a 16-bit mask can hold "
            f"({MAX_CLASSES_16BIT}); merge classes"
        )
    ignore = IGNORE_INDEX_16 if len(names) > MAX_CLASSES_8BIT else IGNORE_INDEX
    return ClassMap(names=names, ignore_index=ignore)


def as_multilabel(class_map: ClassMap) -> ClassMap:
    """The same classes and colours as a multi-label map (ignore value: the mask's top bit).

    Raises:
        SegtoolError: more foreground classes than a multi-label mask holds.
    """
    if class_map.multilabel:
        return class_map
    from segtool.core.multilabel import ignore_value

    return ClassMap(
        names=class_map.names,
        colors=class_map.colors,
        ignore_index=ignore_value(class_map.num_foreground),
        multilabel=True,
    )


def _check_unique(names: tuple[str, ...], source: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SegtoolError(f"{source}: class name {name!r} appears twice; keep one")
        seen.add(name)


def derive_class_map(labels: Iterable[str], *, multilabel: bool = False) -> ClassMap:
    """Background 0, then every label found in the annotations sorted by name."""
    found = sorted(set(labels) - {BACKGROUND_NAME, IGNORE_LABEL})
    return make_class_map([BACKGROUND_NAME, *found], source="annotations", multilabel=multilabel)


def _invisible(char: str) -> bool:
    """Format and control characters (zero-width spaces, byte-order marks...), tab excepted."""
    return char != "\t" and unicodedata.category(char) in ("Cf", "Cc", "Co", "Cn")


def read_labels_txt(path: Path) -> ClassMap:
    """Read labelme's ``labels.txt``: optional ``__ignore__``, then ``_background_``, then classes.

    Raises:
        SegtoolError: the file is unreadable, empty, misordered or has duplicate names.
    """
    try:
        # utf-8-sig: a byte-order mark (Windows editors add one) is not part of line 1's name.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegtoolError(f"{path}: cannot read the labels file ({exc}); check the path") from exc
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        hidden = [c for c in line if _invisible(c)]
        if hidden:
            raise SegtoolError(
                f"{path}: line {number} ({line!r}) holds an invisible character "
                f"U+{ord(hidden[0]):04X} ({unicodedata.name(hidden[0], 'control')}) that would "
                f"make the name differ from the annotations' label; retype the line"
            )
        if line.strip():
            names.append(line.strip())
    if not names:
        raise SegtoolError(f"{path}: the labels file is empty; write one class name a line")
    if names[0] == IGNORE_LABEL:
        names = names[1:]
        if not names or names[0] != BACKGROUND_NAME:
            got = names[0] if names else "end of file"
            raise SegtoolError(
                f"{path}: line 2 is {got!r}, but after {IGNORE_LABEL} labelme expects "
                f"{BACKGROUND_NAME}; add {BACKGROUND_NAME} as line 2"
            )
    if IGNORE_LABEL in names:
        raise SegtoolError(
            f"{path}: {IGNORE_LABEL} may only be the first line of a labels file; move it to line 1"
        )
    if BACKGROUND_NAME in names and names[0] != BACKGROUND_NAME:
        raise SegtoolError(
            f"{path}: {BACKGROUND_NAME} is on line {names.index(BACKGROUND_NAME) + 1}, but it is "
            f"class 0; move it before the other classes"
        )
    if names[0] != BACKGROUND_NAME:
        names = [BACKGROUND_NAME, *names]
    return make_class_map(names, source=str(path))


def read_classes_json(path: Path) -> ClassMap:
    """Read a ``classes.json`` written by segtool (or by hand in the same layout).

    Raises:
        SegtoolError: the file does not parse or breaks the layout (ids 0..K-1, unique names,
            RGB colours, an ignore value outside the class ids).
    """
    return class_map_from_json(read_json(path, "classes.json", "fix the JSON"), path)


def class_map_from_json(doc: Any, path: Path | str) -> ClassMap:
    """A class map from a parsed ``classes.json`` document (`path` names where it came from,
    such as an exported model's ``segtool.json``).

    Raises:
        SegtoolError: the document breaks the layout of `read_classes_json`.
    """
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SegtoolError(
            f'{path}: no "classes" list; expected {{"classes": [{{"id": 0, "name": ...}}], ...}}'
        )
    by_id: dict[int, dict] = {}
    for entry in entries:
        cid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool) or cid in by_id:
            raise SegtoolError(f"{path}: class entry {entry!r} needs a unique integer id")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise SegtoolError(f"{path}: class id {cid} needs a non-empty name")
        by_id[cid] = entry
    if sorted(by_id) != list(range(len(by_id))):
        raise SegtoolError(
            f"{path}: class ids {sorted(by_id)} are not 0..{len(by_id) - 1}; number them "
            f"contiguously from 0 (background)"
        )
    names = tuple(by_id[i]["name"] for i in range(len(by_id)))
    _check_unique(names, str(path))
    multilabel = doc.get("multilabel", False)
    if not isinstance(multilabel, bool):
        raise SegtoolError(f'{path}: "multilabel" {multilabel!r} must be true or false')
    default = make_class_map(names, source=str(path), multilabel=multilabel)
    ignore = doc.get("ignore_index", default.ignore_index)
    if multilabel and ignore != default.ignore_index:
        raise SegtoolError(
            f"{path}: ignore_index {ignore!r} of a multi-label map must be the mask's top bit, "
            f"{default.ignore_index}; use {default.ignore_index}"
        )
    if not isinstance(ignore, int) or isinstance(ignore, bool) or 0 <= ignore < len(names):
        raise SegtoolError(
            f"{path}: ignore_index {ignore!r} must be an integer that is not a class id "
            f"(0..{len(names) - 1}); use {default.ignore_index}"
        )
    limit = MAX_CLASSES_16BIT if default.sixteen_bit else 255
    if not multilabel and (ignore > limit or ignore < 0):
        raise SegtoolError(f"{path}: ignore_index {ignore} does not fit the mask; use {limit}")
    colors = []
    for i in range(len(names)):
        color = by_id[i].get("color", list(default.colors[i]))
        ok = isinstance(color, list) and len(color) == 3
        if not ok or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
            raise SegtoolError(
                f"{path}: class {names[i]!r} color {color!r} is not [r, g, b] 0..255"
            )
        colors.append(tuple(color))
    scored = doc.get("background_scored", False)
    if not isinstance(scored, bool):
        raise SegtoolError(f"{path}: background_scored {scored!r} must be true or false")
    return ClassMap(
        names=names,
        colors=tuple(colors),
        ignore_index=ignore,
        multilabel=multilabel,
        background_scored=scored,
    )


def read_class_map(path: Path) -> ClassMap:
    """Read a class map from a ``classes.json`` (by suffix) or a labelme ``labels.txt``."""
    if not path.is_file():
        raise SegtoolError(f"{path}: no such labels file; pass a labels.txt or classes.json")
    if path.suffix.lower() == ".json":
        return read_classes_json(path)
    return read_labels_txt(path)
