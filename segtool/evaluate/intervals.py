"""Object-level scores and 95 % bootstrap intervals in ``summary.json``.

Every score evaluate reports per class is a ratio of sums over images (cases): a pooled score
sums the images' counts (Dice: 2TP / (2TP + FP + FN); detection F1 the same over objects; PQ:
summed IoU / (TP + FP/2 + FN/2)), a per-image mean sums each image's value over the images
where it is defined. So each score is one (numerator, denominator) table of images x classes,
its value the ratio of the column sums, and its interval the percentile bootstrap of that
ratio over images (`segtool.core.bootstrap.draws`); a mean over classes is, per draw, the
mean of the classes defined in it. One table gives the value and its interval, so they agree.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from segtool.core.bootstrap import LEVEL, RESAMPLES, SEED, draws, interval
from segtool.core.metrics import Counts, dice, mean_precision_terms
from segtool.evaluate.score import ImageScore

#: Scores pooled over images from counts (per_class already holds their values).
PIXEL_SCORES = ("dice", "iou", "precision", "recall")
#: Object-level scores added to per_class and the foreground mean.
OBJECT_SCORES = (
    "lesion_dice",
    "lesion_hd95",
    "detection_precision",
    "detection_recall",
    "detection_f1",
    "nsd",
    "pq",
    "sq",
    "rq",
)
#: Per-image values written to per_image.csv (beside Dice, IoU, HD95).
PER_IMAGE_OBJECT_SCORES = ("lesion_dice", "lesion_hd95", "nsd", "pq")


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mean over images as a ratio: (values with NaN as 0, 1 where defined)."""
    defined = ~np.isnan(values)
    return np.where(defined, values, 0.0), defined.astype(np.float64)


def _stack(scores: list[ImageScore], k: int, get) -> np.ndarray:
    return np.array([get(s) for s in scores], dtype=np.float64).reshape(len(scores), k, -1)


def ratio_tables(scores: list[ImageScore], k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each score's (numerator, denominator), images x K."""
    counts = Counts(
        *(
            _stack(scores, k, lambda s, f=f: getattr(s.counts.padded(k), f))[..., 0]
            for f in ["tp", "fp", "fn"]
        )
    )
    tp, fp, fn = counts.astuple()
    tables = {
        "dice": (2 * tp, 2 * tp + fp + fn),
        "iou": (tp, tp + fp + fn),
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
        "image_mean_dice": _mean(dice(counts)),
    }
    if scores and scores[0].hd95 is not None:
        hd = _stack(
            scores, k, lambda s: np.pad(s.hd95, (0, k - len(s.hd95)), constant_values=np.nan)
        )
        tables["hd95"] = _mean(hd[..., 0])
    objects = [s.objects for s in scores]
    if scores and all(o is not None for o in objects):
        tables.update(_object_tables(scores, k))
    return tables


def _object_tables(scores: list[ImageScore], k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    scores = [replace(s, objects=s.objects.padded(k)) for s in scores]
    lesion = _stack(scores, k, lambda s: s.objects.lesion)
    tp, fp, fn = np.moveaxis(_stack(scores, k, lambda s: s.objects.detected), -1, 0)
    tables = {"lesion_dice": _mean(lesion[..., 0])}
    if scores[0].hd95 is not None:  # boundary distances were computed
        tables["lesion_hd95"] = _mean(lesion[..., 1])
    tables |= {
        "detection_precision": (tp, tp + fp),
        "detection_recall": (tp, tp + fn),
        "detection_f1": (2 * tp, 2 * tp + fp + fn),
    }
    if scores[0].objects.nsd is not None:
        tables["nsd"] = _mean(_stack(scores, k, lambda s: s.objects.nsd)[..., 0])
    if all(s.objects.panoptic is not None for s in scores):
        tp, fp, fn, iou_sum = np.moveaxis(_stack(scores, k, lambda s: s.objects.panoptic), -1, 0)
        half = tp + 0.5 * (fp + fn)
        tables.update(pq=(iou_sum, half), sq=(iou_sum, tp), rq=(tp, half))
    return tables


def _class_mean(stats: np.ndarray) -> np.ndarray:
    """Per draw, the mean of the classes defined in it (NaN when none is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stats, axis=1)


def add_objects_and_intervals(
    summary: dict,
    scores: list[ImageScore],
    names: Sequence[str],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> None:
    """Add the object-level scores (where scored) and a 95 % bootstrap interval beside every
    score and mean to a `summarize` document: ``per_class[c].ci95``, ``mean_ci95``,
    ``mean_all_ci95`` (``[low, high]`` or null), and ``bootstrap`` (how they were drawn)."""
    k = len(names)
    tables = ratio_tables(scores, k)
    keys = list(tables)
    num = np.concatenate([tables[m][0] for m in keys], axis=1)
    den = np.concatenate([tables[m][1] for m in keys], axis=1)
    stems = [s.stem for s in scores]
    stats = draws(num, den, seed=seed, resamples=resamples, keys=stems)
    stats = stats.reshape(resamples, len(keys), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (num.sum(axis=0) / den.sum(axis=0)).reshape(len(keys), k)
    index = {name: c for c, name in enumerate(names)}
    for name, entry in summary["per_class"].items():
        c = index[name]
        for j, m in enumerate(keys):
            if m in OBJECT_SCORES:
                entry[m] = _clean(values[j, c]) if c else None
        if any(m in OBJECT_SCORES for m in keys):
            _object_counts(entry, scores, c)
        ends = interval(stats[:, :, c], LEVEL)
        entry["ci95"] = {m: _pair(ends[:, j]) for j, m in enumerate(keys) if m in entry}
    _mean_intervals(summary, keys, values, stats, names)
    summary["bootstrap"] = {
        "method": "percentile",
        "level": LEVEL,
        "resamples": resamples,
        "seed": seed,
        "over": "cases" if summary.get("volumes") else "images",
    }
    _per_image(summary, tables, keys, names)


def _pair(ends: np.ndarray) -> list[float] | None:
    return None if np.isnan(ends).any() else [float(ends[0]), float(ends[1])]


def _object_counts(entry: dict, scores: list[ImageScore], c: int) -> None:
    scores = [replace(s, objects=s.objects.padded(c + 1)) for s in scores]
    lesion = np.array([s.objects.lesion[c, 2:] for s in scores]).reshape(-1, 4).sum(axis=0)
    detected = np.array([s.objects.detected[c] for s in scores]).reshape(-1, 3).sum(axis=0)
    entry.update(
        lesions=int(lesion[0]),
        lesions_missed=int(lesion[1]),
        lesion_false_positives=int(lesion[2]),
        lesions_small=int(lesion[3]),
        images_nan_lesion_dice=sum(math.isnan(s.objects.lesion[c, 0]) for s in scores),
        objects_tp=int(detected[0]),
        objects_fp=int(detected[1]),
        objects_fn=int(detected[2]),
    )


def _mean_intervals(summary: dict, keys: list[str], values, stats, names) -> None:
    """The foreground mean of each object score, and every mean's interval."""
    foreground = list(range(1, len(names)))
    for j, m in enumerate(keys):
        if m in OBJECT_SCORES:
            column = values[j, foreground]
            summary["mean"][m] = (
                _clean(float(np.nanmean(column))) if (~np.isnan(column)).any() else None
            )
            summary["mean_left_out"][m] = [names[c] for c in foreground if math.isnan(values[j, c])]
    # The mean precision counts a class never predicted in a draw as 0, as its value does;
    # precision_predicted leaves such a class out.
    by_key = {m: stats[:, j] for j, m in enumerate(keys)}
    by_key["precision_predicted"] = by_key["precision"]
    by_key["precision"] = mean_precision_terms(by_key["precision"], stats[:, keys.index("dice")])
    for mean_key, ids in (("mean", foreground), ("mean_all", list(range(len(names))))):
        if mean_key not in summary:
            continue
        summary[f"{mean_key}_ci95"] = {
            m: _pair(interval(_class_mean(by_key[m][:, ids]), LEVEL)[:, 0])
            for m in by_key
            if m in summary[mean_key]
        }


def _per_image(summary: dict, tables: dict, keys: list[str], names: Sequence[str]) -> None:
    scored = [(c, n) for c, n in enumerate(names) if c and n in summary["per_class"]]
    for m in PER_IMAGE_OBJECT_SCORES:
        if m not in tables:
            continue
        num, den = tables[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = num / den
        for i, row in enumerate(summary["per_image"]):
            row[m] = {n: _clean(ratio[i, c]) for c, n in scored}
