"""Aggregating per-image counts into the ``summary.json`` document: pooled scores per class,
the foreground and all-class means with what each covers and leaves out, per-image rows."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from segtool.core.files import atomic_path
from segtool.core.metrics import (
    Counts,
    dice,
    iou,
    mean_precision_terms,
    nanmean,
    pixel_accuracy,
    precision,
    recall,
)
from segtool.evaluate.intervals import PER_IMAGE_OBJECT_SCORES
from segtool.evaluate.score import ImageScore

#: The summary document's name in an evaluation's --out folder.
SUMMARY_FILE = "summary.json"


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined scores are written as null."""
    return None if value is None or math.isnan(value) else float(value)


def _class_entries(
    scores_by_name: dict[str, np.ndarray],
    pooled: Counts,
    table: Counts,
    hd: np.ndarray | None,
) -> dict[int, dict]:
    """The per_class entry of every class id: pooled scores and counts, per-image means."""
    per_image_dice = dice(table)
    has_reference = (table.tp + table.fn) > 0
    entries = {}
    for c in range(len(pooled.tp)):
        entry = {metric: _clean(values[c]) for metric, values in scores_by_name.items()}
        entry.update(
            tp=int(pooled.tp[c]),
            fp=int(pooled.fp[c]),
            fn=int(pooled.fn[c]),
            images_with_reference=int(has_reference[:, c].sum()),
            image_mean_dice=_clean(nanmean(per_image_dice[:, c])),
            images_nan_dice=int(np.isnan(per_image_dice[:, c]).sum()),
        )
        if hd is not None:  # no boundary distance is computed for the background
            entry["hd95"] = _clean(nanmean(hd[:, c])) if c else None
            entry["images_nan_hd95"] = int(np.isnan(hd[:, c]).sum()) if c else len(hd)
        entries[c] = entry
    return entries


def _mean_terms(entries: dict[int, dict], keys: list[str], dice_values: np.ndarray) -> dict:
    """Each class's term in a mean over classes, per key: its per_class value (NaN where
    undefined), except that the mean precision counts a class never predicted as 0
    (`mean_precision_terms`); ``precision_predicted`` keeps the old figure, the mean over the
    classes predicted at least once."""
    k = len(entries)
    terms = {
        key: np.array([np.nan if entries[c][key] is None else entries[c][key] for c in range(k)])
        for key in keys
    }
    terms["precision_predicted"] = terms["precision"]
    terms["precision"] = mean_precision_terms(terms["precision"], dice_values)
    return terms


def label_set_accuracy(scores: list[ImageScore]) -> float:
    """Pixel accuracy of multi-label masks: the share of counted pixels (not ignored by the
    reference) whose whole label set is right; NaN when no pixel counts."""
    counted = sum(s.pixels_counted for s in scores)
    return sum(s.pixels_right for s in scores) / counted if counted else float("nan")


def summarize(
    scores: list[ImageScore],
    names: list[str],
    ignore_index: int,
    *,
    multilabel: bool = False,
    background_scored: bool = False,
) -> dict:
    """Aggregate per-image scores into the ``summary.json`` document (docs/architecture.md).

    Scored classes are the ids >= 1, and id 0 too when the class map says it is a real class.
    ``mean`` averages the foreground classes (ids >= 1), ``mean_all`` every class 0..K-1 (what
    segmentation-models-pytorch and mmseg users call mIoU); each names the classes it covers and
    those it leaves out because their value is undefined (NaN). `multilabel` scores say so,
    have no all-class mean, and their pixel accuracy is `label_set_accuracy`.
    """
    k = len(names)
    # One (images x K) table per count, so every aggregate below is a column operation.
    table = Counts(
        *(
            np.array([getattr(sc.counts.padded(k), f) for sc in scores]).reshape(-1, k)
            for f in ("tp", "fp", "fn")
        )
    )
    pooled = Counts(*(a.sum(axis=0) for a in table.astuple()))
    per_image_dice = dice(table)
    per_image_iou = iou(table)
    with_hd95 = bool(scores) and scores[0].hd95 is not None
    hd = None
    if with_hd95:
        hd = np.array(
            [np.pad(s.hd95, (0, k - len(s.hd95)), constant_values=np.nan) for s in scores]
        )
    scores_by_name = {
        "dice": dice(pooled),
        "iou": iou(pooled),
        "precision": precision(pooled),
        "recall": recall(pooled),
    }
    entries = _class_entries(scores_by_name, pooled, table, hd)
    scored = [c for c in range(k) if c or background_scored]
    per_class = {names[c]: entries[c] for c in scored}
    mean_keys = ["dice", "iou", "precision", "recall", "image_mean_dice"] + (
        ["hd95"] if with_hd95 else []
    )
    terms = _mean_terms(entries, mean_keys, scores_by_name["dice"])

    def average(ids: list[int]) -> tuple[dict, dict]:
        means, left_out = {}, {}
        for key, values in terms.items():
            means[key] = _clean(nanmean(values[ids]))
            left_out[key] = [names[c] for c in ids if np.isnan(values[c])]
        return means, left_out

    foreground = list(range(1, k))
    mean, mean_left_out = average(foreground)
    mean_all, mean_all_left_out = average(list(range(k)))
    mean_all.pop("hd95", None)  # no boundary distance is defined for the background
    mean_all_left_out.pop("hd95", None)
    everything = {"mean_all": mean_all, "mean_all_covers": list(names)}
    everything["mean_all_left_out"] = mean_all_left_out
    accuracy = pixel_accuracy(pooled)
    absent = [names[c] for c in foreground if math.isnan(scores_by_name["dice"][c])]
    per_image = []
    for i, s in enumerate(scores):
        row = {
            "image": s.stem,
            "dice": {names[c]: _clean(per_image_dice[i, c]) for c in scored},
            "iou": {names[c]: _clean(per_image_iou[i, c]) for c in scored},
        }
        if with_hd95:
            row["hd95"] = {names[c]: _clean(hd[i, c]) for c in scored if c}
        per_image.append(row)
    return {
        "n_images": len(scores),
        "ignore_index": ignore_index,
        "background_scored": background_scored,
        "classes": {str(c): names[c] for c in scored},
        "per_class": per_class,
        "mean": mean,
        "mean_covers": [names[c] for c in foreground],
        "mean_excludes": absent,
        "mean_left_out": mean_left_out,
        **({} if multilabel else everything),
        "pixel_accuracy": _clean(label_set_accuracy(scores) if multilabel else accuracy),
        "prediction_ignored": int(sum(s.counts.abstained for s in scores)),
        "missing_predictions": [s.stem for s in scores if s.missing_prediction],
        "per_image": per_image,
        **({"multilabel": True} if multilabel else {}),
    }


def write_table(path: Path, summary: dict) -> None:
    """The per-item table: one row an image (or case), a ``<metric>_<class>`` column each."""
    names = list(summary["per_class"])
    shown = ("dice", "iou", "hd95", *PER_IMAGE_OBJECT_SCORES)
    metrics = [m for m in shown if summary["per_image"] and m in summary["per_image"][0]]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *(f"{m}_{n}" for n in names for m in metrics)])
        for row in summary["per_image"]:
            values = [row[m].get(n) for n in names for m in metrics]
            writer.writerow([row["image"], *("" if v is None else f"{v:.6g}" for v in values)])
