"""`--shard K/N`: one share of a sorted list of files, so that N processes or machines split
a folder between them (predict and evaluate), each writing its own output.

Shard K of N takes the K-th of N contiguous blocks of the sorted list (sizes differ by at
most one); the N blocks cover the list exactly once, in order, so shards' outputs added up
(evaluate's counts are sums) or put side by side (predict's masks) give what one run over the
whole list gives. Under ``torchrun`` the shard defaults to ``RANK + 1`` of ``WORLD_SIZE``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from segtool.core.errors import SegtoolError

T = TypeVar("T")

#: What a sharded predict records about its share, in its output folder.
SHARD_FILE = "shard.json"


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's contiguous block of `items` (already in their sorted order)."""
        n = len(items)
        return list(items[(self.index - 1) * n // self.count : self.index * n // self.count])


def parse_shard(text: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """``K/N`` as a `Shard`; None (no option) under torchrun gives ``RANK + 1`` of
    ``WORLD_SIZE`` when it is above 1, else None (the whole list).

    Raises:
        SegtoolError: not ``K/N`` with 1 <= K <= N.
    """
    if text is None:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        return Shard(int(env.get("RANK", "0")) + 1, world) if world > 1 else None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise SegtoolError(
            f"--shard {text!r} must be K/N with 1 <= K <= N (shard K of N, e.g. --shard 2/8)"
        )
    return Shard(int(match[1]), int(match[2]))
