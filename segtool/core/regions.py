"""Regions: overlapping targets made from an exclusive label map, each region a union of ids.

``--regions "whole=1,2,3;core=2,3;enhancing=3"`` turns a brain-tumour label map into the nested
regions it is scored on (as nnU-Net's region-based training and MONAI's BraTS transform do):
every pixel gets the bit of each region that contains its class id, so the result is a
multi-label mask (`segtool.core.multilabel`) with one class per region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segtool.core.classes import ClassMap, make_class_map
from segtool.core.constants import BACKGROUND_NAME
from segtool.core.errors import SegtoolError
from segtool.core.multilabel import ignore_value, value_dtype


@dataclass(frozen=True)
class Regions:
    """Named unions of class ids and the lookup table that applies them to a label array."""

    names: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]
    source: ClassMap  # the exclusive map the ids refer to
    class_map: ClassMap  # the multi-label map of the regions (background, then the regions)

    @property
    def table(self) -> np.ndarray:
        """Lookup table: exclusive pixel value -> bit values of its regions (ignore -> ignore)."""
        size = max(self.source.num_classes, self.source.ignore_index + 1)
        dtype = value_dtype(len(self.names))
        table = np.zeros(size, dtype=dtype)
        for bit, members in enumerate(self.ids):
            table[list(members)] |= dtype.type(1 << bit)
        table[self.source.ignore_index] = ignore_value(len(self.names))
        return table

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Exclusive class ids (values checked against the source map) -> region bit values."""
        return self.table[labels]

    def to_text(self) -> str:
        """The option text that builds these regions."""
        return ";".join(
            f"{name}={','.join(map(str, ids))}"
            for name, ids in zip(self.names, self.ids, strict=True)
        )


def parse_regions(text: str, class_map: ClassMap) -> Regions:
    """Parse ``"name=id,id;name=id"`` against an exclusive class map.

    Raises:
        SegtoolError: bad syntax, a repeated or empty name, an id the map does not have (or
            background), or a multi-label map (regions start from exclusive label maps).
    """
    example = 'e.g. --regions "whole=1,2,3;core=2,3;enhancing=3"'
    if class_map.multilabel:
        raise SegtoolError(
            "--regions turns exclusive label maps into overlapping targets, but the dataset's "
            "masks are already multi-label; drop --regions"
        )
    names: list[str] = []
    ids: list[tuple[int, ...]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, members = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SegtoolError(f"--regions {part!r}: write name=id,id,...; {example}")
        if name in names or name == BACKGROUND_NAME:
            raise SegtoolError(f"--regions: region name {name!r} is used twice; rename one")
        try:
            members_ids = tuple(sorted({int(v) for v in members.split(",") if v.strip()}))
        except ValueError:
            raise SegtoolError(
                f"--regions {part!r}: ids must be whole numbers; {example}"
            ) from None
        if not members_ids:
            raise SegtoolError(f"--regions {part!r}: region {name!r} names no id; {example}")
        unknown = [i for i in members_ids if not 1 <= i < class_map.num_classes]
        if unknown:
            known = ", ".join(f"{i}={n}" for i, n in enumerate(class_map.names) if i)
            raise SegtoolError(
                f"--regions: region {name!r} names id {unknown[0]}, which is not a foreground "
                f"class of the class map ({known}); use those ids"
            )
        names.append(name)
        ids.append(members_ids)
    if not names:
        raise SegtoolError(f"--regions {text!r} names no region; {example}")
    try:
        regions_map = make_class_map([BACKGROUND_NAME, *names], source="--regions", multilabel=True)
    except SegtoolError as exc:
        raise SegtoolError(str(exc)) from None
    return Regions(tuple(names), tuple(ids), class_map, regions_map)
