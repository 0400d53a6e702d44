"""``evaluate --shard K/N`` and ``evaluate --merge``: one folder scored by N jobs, then one
report, the same to the byte as one run over the whole folder.

A shard scores its block of the references (in name order, as `core.shards` splits) and
writes, beside its own summary, ``shard_scores.json``: each item's raw scores (counts, distances,
object scores; numbers exact in JSON), the shard's confusion matrix and what the summary is
built from. `merge_shards` checks that the shards are 1..N of one evaluation, puts the items
back in order and builds the report with the same function (`summary_from`) a single run
uses: counts add up exactly (the confusion matrices too), and the means and intervals over
images see the very same list.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.metrics import Counts
from segtool.core.shards import Shard
from segtool.evaluate.confusion import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    pad_matrix,
    write_confusion,
)
from segtool.evaluate.intervals import add_objects_and_intervals
from segtool.evaluate.objects import ObjectScores
from segtool.evaluate.score import ImageScore
from segtool.evaluate.summary import SUMMARY_FILE, summarize, write_table

#: A shard's items and context, in its --out folder (beside predict's ``shard.json``, when
#: the predictions folder is also the report's folder).
SCORES_FILE = "shard_scores.json"
#: The version of that file's layout.
SHARD_FORMAT = 1


def summary_from(scores: list[ImageScore], context: dict[str, Any]) -> dict:
    """The summary document of `scores` (in name order) from the reader's `context`:
    ``names``, ``ignore_index``, ``multilabel``, ``background_scored``, ``fields`` (the
    reader's extra summary fields), ``seed`` and ``objects`` (the object settings, or None)."""
    summary = summarize(
        scores,
        context["names"],
        context["ignore_index"],
        multilabel=context["multilabel"],
        background_scored=context["background_scored"],
    )
    summary.update(context["fields"])
    add_objects_and_intervals(summary, scores, context["names"], seed=context["seed"])
    if context["objects"] is not None:
        summary["objects"] = context["objects"]
    return summary


def _array(a: np.ndarray | None) -> dict | None:
    if a is None:
        return None
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}


def _unarray(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.array(d["data"], dtype=d["dtype"]).reshape(d["shape"])


def encode_score(s: ImageScore) -> dict[str, Any]:
    """One item's scores as JSON values (floats by their shortest exact repr, NaN as NaN)."""
    c = s.counts
    objects = None
    if s.objects is not None:
        objects = {f.name: _array(getattr(s.objects, f.name)) for f in fields(ObjectScores)}
    return {
        "stem": s.stem,
        "counts": {
            "tp": _array(c.tp),
            "fp": _array(c.fp),
            "fn": _array(c.fn),
            "abstained": c.abstained,
        },
        "hd95": _array(s.hd95),
        "missing_prediction": s.missing_prediction,
        "reference_ignored": s.reference_ignored,
        "pixels_right": s.pixels_right,
        "pixels_counted": s.pixels_counted,
        "objects": objects,
    }


def decode_score(d: dict[str, Any]) -> ImageScore:
    """The inverse of `encode_score`."""
    c = d["counts"]
    counts = Counts(*(_unarray(c[k]) for k in ("tp", "fp", "fn")), abstained=c["abstained"])
    objects = d["objects"]
    return ImageScore(
        d["stem"],
        counts,
        _unarray(d["hd95"]),
        d["missing_prediction"],
        d["reference_ignored"],
        d["pixels_right"],
        d["pixels_counted"],
        None if objects is None else ObjectScores(**{k: _unarray(v) for k, v in objects.items()}),
    )


def shard_document(
    shard: Shard, scores: list[ImageScore], context: dict, confusion: np.ndarray | None = None
) -> dict[str, Any]:
    """``shard_scores.json``: the shard, the summary's context, every item's scores and the
    shard's summed confusion matrix (None for multi-label masks and regions)."""
    return {
        "format": SHARD_FORMAT,
        "shard": str(shard),
        "context": context,
        "scores": [encode_score(s) for s in scores],
        "confusion": _array(confusion),
    }


def numbered_names(k: int) -> list[str]:
    """The classes of masks scored without a class map: background, then each label up to
    the largest of `k` classes any mask holds (at least two)."""
    return ["background" if c == 0 else str(c) for c in range(max(k, 2))]


def _merged_context(contexts: list[dict[str, Any]]) -> dict[str, Any]:
    """The one context the shards were scored in. Without a class map each shard names the
    classes up to the largest label its own block holds (`numbered_names`), so those names
    may differ in length: the merge takes the longest, as one run over every block does.

    Raises:
        SegtoolError: the shards were scored with different classes or options.
    """
    widest = max(contexts, key=lambda c: len(c["names"]))
    for context in contexts:
        names = context["names"]
        numbered = names == numbered_names(len(names)) == widest["names"][: len(names)]
        same_names = names == widest["names"] or (
            numbered and widest["names"] == numbered_names(len(widest["names"]))
        )
        if not same_names or {**context, "names": widest["names"]} != widest:
            raise SegtoolError(
                "--merge: the shards were evaluated with different classes or options; "
                "evaluate every shard with the same options"
            )
    return widest


def _summed_confusion(docs: list[dict[str, Any]], k: int) -> np.ndarray | None:
    """The shards' confusion matrices added up (a sum, so exact); None when a shard has none
    (multi-label masks, regions, or a shard written before segtool kept it)."""
    matrices = [_unarray(d.get("confusion")) for d in docs]
    if any(m is None for m in matrices):
        return None
    return sum((pad_matrix(m, k) for m in matrices), np.zeros((k, k + 1), dtype=np.int64))


def _read_shard(folder: Path) -> dict[str, Any]:
    path = folder / SCORES_FILE
    try:
        doc = json.loads(path.read_text())
        index, count = (int(x) for x in doc["shard"].split("/"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SegtoolError(
            f"{path}: not a shard of segtool evaluate ({type(exc).__name__}); pass the --out "
            f"folders of evaluate --shard K/N runs"
        ) from None
    if doc.get("format") != SHARD_FORMAT:
        raise SegtoolError(f"{path}: shard format {doc.get('format')!r}; evaluate it again")
    doc["index"], doc["count"] = index, count
    return doc


def merge_shards(folders: list[Path], out: Path, overwrite: bool = False) -> dict:
    """One report (summary.json, the per-item table and, for exclusive classes, confusion.csv
    and confusion.png in `out`) from the ``--out`` folders of ``evaluate --shard K/N`` runs,
    shards 1 to N each once.

    Returns:
        The summary document.

    Raises:
        SegtoolError: a folder that holds no shard, shards of different evaluations, a
            shard missing or given twice, or an existing report without `overwrite`.
    """
    docs = sorted((_read_shard(f) for f in folders), key=lambda d: d["index"])
    count = docs[0]["count"]
    indices = [d["index"] for d in docs]
    if any(d["count"] != count for d in docs) or indices != list(range(1, count + 1)):
        found = ", ".join(d["shard"] for d in docs)
        raise SegtoolError(
            f"--merge needs shards 1/{count} to {count}/{count} once each, got {found}; pass "
            f"every shard's folder"
        )
    context = _merged_context([d["context"] for d in docs])
    scores = [decode_score(s) for d in docs for s in d["scores"]]
    summary = summary_from(scores, context)
    matrix = _summed_confusion(docs, len(context["names"]))
    plan = OutputPlan(overwrite=overwrite)
    for folder in folders:
        plan.read("a shard's folder", folder, files_only=True)
    names = [SUMMARY_FILE, context["table_file"]]
    names += [CONFUSION_CSV, CONFUSION_PNG] if matrix is not None else []
    targets = [plan.write(out / name, folder=False, option="--out") for name in names]
    plan.check()
    with plan.build():
        write_json(targets[0].tmp, summary)
        write_table(targets[1].tmp, summary)
        if matrix is not None:  # as one run writes it: the same matrix, the same files
            volumes = bool(summary.get("volumes"))
            write_confusion(targets[2].tmp, targets[3].tmp, matrix, context, volumes)
    return summary
