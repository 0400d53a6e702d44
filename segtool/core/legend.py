"""Colour legends under pictures (predict's overlays, evaluate's gallery sheets): a swatch and
a name for each class shown, in the class map's palette, so a picture says which colour is
which class without opening ``classes.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from segtool.core.classes import ClassMap

if TYPE_CHECKING:
    from PIL import Image

Entry = tuple[str, tuple[int, int, int]]
#: Swatch side and line height of a legend, in pixels (PIL's default bitmap font is 11 px).
SWATCH, LINE = 12, 16


def present_ids(class_map: ClassMap, *masks: np.ndarray, background: bool = True) -> list[int]:
    """The class ids found in `masks` (label masks: values; multi-label masks: set bits, id
    c for bit c-1), in id order; the ignore value is none, and id 0 only with `background`."""
    k = class_map.num_classes
    found: set[int] = set()
    for mask in masks:
        if class_map.multilabel:
            bits = int(np.bitwise_or.reduce(mask, axis=None)) if mask.size else 0
            found |= {c for c in range(1, k) if bits >> (c - 1) & 1}
        else:
            found |= {int(v) for v in np.unique(mask) if int(v) < k}
    return sorted(c for c in found if c or background)


def class_entries(class_map: ClassMap, ids: list[int]) -> list[Entry]:
    """(name, colour) of each id, from the class map's palette."""
    return [(class_map.names[c], tuple(class_map.colors[c])) for c in ids]


def with_legend(picture: Image.Image, entries: list[Entry]) -> Image.Image:
    """`picture` with a white strip below it holding a swatch and the name of each entry,
    left to right, wrapped to the picture's width (unchanged when there is no entry)."""
    from PIL import Image, ImageDraw

    if not entries:
        return picture
    draw = ImageDraw.Draw(picture)
    widths = [SWATCH + 4 + int(draw.textlength(name)) + 12 for name, _ in entries]
    rows, x = 1, 0
    for w in widths:
        if x and x + w > picture.width:
            rows, x = rows + 1, 0
        x += w
    out = Image.new("RGB", (picture.width, picture.height + rows * LINE + 4), (255, 255, 255))
    out.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    x, y = 2, picture.height + 3
    for (name, colour), w in zip(entries, widths, strict=True):
        if x > 2 and x + w > picture.width:
            x, y = 2, y + LINE
        draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=colour, outline=(0, 0, 0))
        draw.text((x + SWATCH + 4, y), name, fill=(0, 0, 0))
        x += w
    return out
