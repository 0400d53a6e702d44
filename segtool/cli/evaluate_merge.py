"""``segtool evaluate --merge SHARD... --out DIR``: one report from the --out folders of
``evaluate --shard K/N`` runs (`segtool.evaluate.shards.merge_shards`)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from segtool.cli.common import UsageError, note


def merge_command(args: SimpleNamespace, print_summary: Callable[[dict, str], None]) -> None:
    """Merge the shards' folders (PRED, GT and the further paths) into --out; print the table."""
    if args.out is None or args.model is not None or args.shard is not None:
        raise UsageError("--merge takes the shards' folders and --out, nothing else")
    from segtool.evaluate.shards import merge_shards

    folders = [args.pred, *([args.gt] if args.gt else []), *(args.more or [])]
    summary = merge_shards(folders, args.out, overwrite=args.overwrite)
    items = "cases" if summary.get("volumes") else "images"
    print_summary(summary, f"{summary['n_images']} {items}: {len(folders)} shards merged")
    note(f"wrote the merged report into {args.out}")
