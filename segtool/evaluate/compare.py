"""``segtool evaluate --compare A B``: two sets of predictions scored on the same references,
and their paired difference.

Each side is scored by the one pipeline (prediction folders with `evaluate_dirs`, runs with
`evaluate_model`), its report written into ``OUT/a`` and ``OUT/b``. Every score is a ratio of
sums over images (`intervals.ratio_tables`), so each side's value, per class and for each mean,
is the one its own report gives; the difference is A - B, and its 95 % interval the
percentile bootstrap of that difference with A and B drawn over the same resampled images
(paired: `core.bootstrap.draws` gives every column the same draws), a mean over classes taken
in each draw as in the reports.

Wins count, per class, the images where A's Dice is above B's, below it, or equal (ties),
with an image where the class is in neither the reference nor the prediction scoring 1 (it is
right; MONAI's ``DiceMetric(ignore_empty=False)``): so a false positive on an empty image
loses to an empty prediction. For a mean, each image's mean of those Dice over its classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segtool.core.bootstrap import LEVEL, RESAMPLES, draws, interval
from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.parallel import ProgressFn
from segtool.evaluate.intervals import ratio_tables
from segtool.evaluate.report import SUMMARY_FILE, Evaluation, evaluate_dirs
from segtool.evaluate.spec import EvalSpec

#: Scores defined for the background too (it has no boundary distance or object score).
PIXEL_SCORES = ("dice", "iou", "precision", "recall", "image_mean_dice")
#: What decides a win, as summary.json states it.
WINS_BY = (
    "each image's Dice per class (1 where the class is in neither the reference nor the "
    "prediction); for a mean, each image's mean of those over the mean's classes"
)


@dataclass
class Comparison:
    """What `compare` wrote: the comparison document and each side's evaluation."""

    summary: dict
    summary_path: Path
    a: Evaluation
    b: Evaluation


def _clean(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _pair(ends: np.ndarray) -> list[float] | None:
    return None if np.isnan(ends).any() else [float(ends[0]), float(ends[1])]


def _class_mean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _wins(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    return {
        "a": int(np.sum(a > b)),
        "b": int(np.sum(b > a)),
        "ties": int(np.sum(a == b)),
    }


def _image_dice(evaluation: Evaluation, k: int) -> np.ndarray:
    """images x K: each image's Dice, 1 where the class is in neither mask."""
    num, den = ratio_tables(evaluation.scores, k)["dice"]
    out = np.ones_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def paired_differences(
    a: Evaluation, b: Evaluation, *, seed: int, resamples: int = RESAMPLES
) -> dict:
    """The comparison document's scores: per class and for each mean, A's and B's value, the
    difference A - B with its paired 95 % bootstrap interval, and the wins.

    Raises:
        SegtoolError: the two were scored on other images or other classes.
    """
    if a.names != b.names:
        raise SegtoolError(f"A scores classes {a.names}, B {b.names}; compare on one class map")
    by_stem = {s.stem: s for s in b.scores}
    stems = [s.stem for s in a.scores]
    if set(by_stem) != set(stems):
        only = sorted(set(stems) ^ set(by_stem))
        raise SegtoolError(
            f"A and B were scored on different images ({len(stems)} and {len(by_stem)}; e.g. "
            f"{only[0]!r} in one only); compare them on the same references"
        )
    b = replace(b, scores=[by_stem[s] for s in stems])
    k = len(a.names)
    tables = [ratio_tables(side.scores, k) for side in (a, b)]
    keys = [m for m in tables[0] if m in tables[1]]
    num = np.concatenate([t[m][0] for t in tables for m in keys], axis=1)
    den = np.concatenate([t[m][1] for t in tables for m in keys], axis=1)
    stats = draws(num, den, seed=seed, resamples=resamples, keys=stems)
    stats = stats.reshape(resamples, 2, len(keys), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (num.sum(axis=0) / den.sum(axis=0)).reshape(2, len(keys), k)
    dice = [_image_dice(side, k) for side in (a, b)]
    index = {name: c for c, name in enumerate(a.names)}
    doc: dict = {"per_class": {}}
    for name, entry in a.summary["per_class"].items():
        c = index[name]
        # No boundary distance or object score is defined for the background.
        shown = {m for m in keys if m in entry and (c or m in PIXEL_SCORES)}
        doc["per_class"][name] = _row(keys, shown, values[:, :, [c]], stats[..., [c]])
        doc["per_class"][name]["wins"] = _wins(dice[0][:, c], dice[1][:, c])
    for mean_key, ids in _means(a):
        shown = set(a.summary[mean_key])
        row = _row(keys, shown, values[:, :, ids], stats[..., ids])
        row["wins"] = _wins(*(_class_mean(d[:, ids], axis=1) for d in dice))
        doc[mean_key] = row
        doc[f"{mean_key}_covers"] = [a.names[c] for c in ids]
    return doc


def _means(a: Evaluation) -> list[tuple[str, list[int]]]:
    """The means the reports give, with the class ids each averages."""
    foreground = list(range(1, len(a.names)))
    means = [("mean", foreground)]
    if "mean_all" in a.summary:
        means.append(("mean_all", list(range(len(a.names)))))
    return means


def _row(keys: list[str], shown: set[str], values: np.ndarray, stats: np.ndarray) -> dict:
    """One row: for each score in `shown`, A's and B's value (the mean over the given
    classes), A - B and its interval. `values`: 2 x scores x classes; `stats`: draws x 2 x
    scores x classes."""
    row = {}
    for j, m in enumerate(keys):
        if m not in shown:
            continue
        a, b = (_class_mean(values[side, j][None], axis=1)[0] for side in (0, 1))
        diff = _class_mean(stats[:, 0, j], axis=1) - _class_mean(stats[:, 1, j], axis=1)
        row[m] = {
            "a": _clean(a),
            "b": _clean(b),
            "difference": _clean(a - b),
            "ci95": _pair(interval(diff[:, None], LEVEL)[:, 0]),
        }
    return row


def compare(
    a: Path,
    b: Path,
    references: Path,
    spec: EvalSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: object,
) -> Comparison:
    """Score `a` and `b` (prediction folders against the reference masks `references`, or
    run folders on the `spec.split` of the dataset `references`) and write the comparison:
    ``OUT/summary.json`` beside each side's own report in ``OUT/a`` and ``OUT/b`` (default OUT:
    ``compare-A-B`` beside A).

    Raises:
        SegtoolError: a run beside a folder, sides scored on other images or classes,
            outputs that exist (without `overwrite`) or collide with the inputs.
    """
    spec = EvalSpec.build(spec, options)
    runs = [(p / "model").is_dir() for p in (a, b)]
    if runs[0] != runs[1]:
        raise SegtoolError(
            f"{a if runs[0] else b} is a run and {b if runs[0] else a} a folder of masks; "
            f"compare two runs (on a DATASET) or two prediction folders (on reference masks)"
        )
    out = spec.out or a.parent / f"compare-{a.name}-{b.name}"
    early = OutputPlan(overwrite=spec.overwrite)  # the sides' folders: checked, never built
    for what, path in (("A", a), ("B", b), ("the references", references)):
        early.read(what, path)
    for side in ("a", "b"):
        early.write(out / side, folder=True, option="--out")
    early.write(out / SUMMARY_FILE, folder=False, option="--out")
    early.check()
    sides = []
    for path, side in ((a, "a"), (b, "b")):
        side_spec = replace(spec, out=out / side)
        if runs[0]:
            from segtool.evaluate.model import evaluate_model

            side_spec = replace(side_spec, split=spec.split or "test")
            sides.append(evaluate_model(path, references, side_spec, on_progress=on_progress))
        else:
            sides.append(evaluate_dirs(path, references, side_spec, on_progress=on_progress))
    doc = {
        "a": str(a),
        "b": str(b),
        "references": str(references),
        "n_images": sides[0].summary["n_images"],
        **({"volumes": True} if sides[0].summary.get("volumes") else {}),
        "difference": "a - b",
        **paired_differences(*sides, seed=spec.seed),
        "wins_by": WINS_BY,
        "bootstrap": {**sides[0].summary["bootstrap"], "paired": True},
        "reports": {"a": str(sides[0].summary_path), "b": str(sides[1].summary_path)},
    }
    summary_plan = OutputPlan(overwrite=spec.overwrite)
    for what, path in (("A", a), ("B", b), ("the references", references)):
        summary_plan.read(what, path)
    target = summary_plan.write(out / SUMMARY_FILE, folder=False, option="--out")
    summary_plan.check()
    with summary_plan.build():
        write_json(target.tmp, doc)
    return Comparison(doc, target.path, *sides)
