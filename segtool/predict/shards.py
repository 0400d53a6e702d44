"""``predict --shard K/N``: this shard's images, and whether its output is already complete.

The images are taken in the order of their names (stems), the order evaluate pairs masks in,
so ``evaluate --shard K/N`` scores exactly what ``predict --shard K/N`` wrote. A sharded OUT
records its share in ``OUT/shard.json``; a job started again finds its complete OUT and does
nothing (an interrupted one left no OUT: outputs are swapped in whole).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError
from segtool.core.shards import SHARD_FILE, Shard


def shard_images(paths: list[Path], shard: Shard) -> list[Path]:
    """`shard`'s block of `paths` in the order of their stems.

    Raises:
        SegtoolError: the shard has no image (more shards than images).
    """
    mine = shard.take(sorted(paths, key=lambda p: (p.stem, p.name)))
    if not mine:
        raise SegtoolError(
            f"--shard {shard}: no image falls to this shard ({len(paths)} images); use at most "
            f"{len(paths)} shards"
        )
    return mine


def shard_record(shard: Shard, paths: list[Path]) -> dict[str, Any]:
    """What ``OUT/shard.json`` holds: the shard and the names of its images."""
    return {"shard": str(shard), "images": [p.name for p in paths]}


def shard_complete(out: Path, shard: Shard, paths: list[Path]) -> bool:
    """True when `out` holds this shard's complete output over the same images."""
    try:
        recorded = json.loads((out / SHARD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return recorded == shard_record(shard, shard_images(paths, shard))
