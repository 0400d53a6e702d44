"""A cross-validation summary: each run of ``segtool train --fold k`` predicts its own
validation fold, and the out-of-fold predictions are reported two ways.

- per fold: every score of each run's own report (``RUN/evaluation/val/summary.json``), then
  per class and for each mean the mean over folds and its sample standard deviation (n - 1; a
  fold where the score is undefined is left out and the count says so);
- pooled: every out-of-fold image scored as one set by the one pipeline (`build_summary` on
  the runs' per-image counts joined: counts are sums, so the pooled Dice is exactly the Dice
  of the images' summed counts), with its 95 % bootstrap intervals over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.parallel import ProgressFn
from segtool.evaluate.model import evaluate_model
from segtool.evaluate.readers import PER_CASE_FILE, PER_IMAGE_FILE
from segtool.evaluate.report import (
    Evaluation,
    ReportTargets,
    build_summary,
    plan_report,
    write_table,
)
from segtool.evaluate.runs import read_run
from segtool.evaluate.spec import EvalSpec
from segtool.train.runfolder import RunFolder

#: The scores summarised over folds (those a fold's report holds).
FOLD_SCORES = (
    "dice",
    "iou",
    "precision",
    "recall",
    "image_mean_dice",
    "hd95",
    "lesion_dice",
    "lesion_hd95",
    "detection_f1",
    "nsd",
    "pq",
)
#: Where each run's own validation report goes.
FOLD_REPORT = Path("evaluation") / "val"


@dataclass
class CrossValidation:
    """What `evaluate_folds` wrote: the pooled summary (with ``cross_validation``) and each
    fold's own evaluation."""

    summary: dict
    summary_path: Path
    per_image_path: Path
    folds: list[Evaluation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _val_folds(runs: Sequence[Path]) -> list[dict]:
    """Each run's split; the runs must share one split's folds and validate on disjoint folds.

    Raises:
        SegtoolError: a run without a split, two runs of one fold or of different splits.
    """
    if len(runs) < 2:
        raise SegtoolError(
            "--cv needs the runs of at least 2 folds (segtool train --fold k for each k)"
        )
    splits, owner = [], {}
    for run in runs:
        split = RunFolder(run).split(required=True)
        first = splits[0] if splits else split
        if split.get("folds") != first.get("folds") or split["test"] != first["test"]:
            raise SegtoolError(
                f"{run}: trained on another split than {runs[0]}; a cross-validation joins "
                f"the runs of one split.json (segtool split --folds K, then train --fold k)"
            )
        for stem in split["val"]:
            if stem in owner:
                raise SegtoolError(
                    f"{run} and {owner[stem]} both validate on {stem!r} (the same fold?); pass "
                    f"one run per fold"
                )
            owner[stem] = run
        splits.append(split)
    return splits


def _report_plan(
    runs: Sequence[Path], dataset: Path, out: Path, spec: EvalSpec, table: str
) -> tuple[OutputPlan, ReportTargets]:
    """The pooled report's outputs, checked against what is read: the runs' evaluation
    folders are checked too (each run's own `evaluate_model` writes it), before anything is
    predicted.

    Raises:
        SegtoolError: an output exists without `overwrite`, or collides with an input.
    """
    early = OutputPlan(overwrite=spec.overwrite)  # checked only: never built
    plan = OutputPlan(overwrite=spec.overwrite)
    for each in (early, plan):
        each.read("the dataset", dataset)
        for run in runs:
            each.read("a run's model", run / "model")
    for run in runs:
        early.write(run / FOLD_REPORT, folder=True, option="the run's evaluation/val")
    plan_report(early, out, 0, table)
    early.check()
    return plan, plan_report(plan, out, 0, table)


def _spread(values: list[float | None]) -> dict:
    """Mean and sample standard deviation over the folds where the value is defined."""
    defined = [v for v in values if v is not None]
    mean = sum(defined) / len(defined) if defined else None
    sd = None
    if len(defined) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1))
    return {"mean": mean, "sd": sd, "folds": values, "folds_defined": len(defined)}


def fold_statistics(summaries: Sequence[dict]) -> dict:
    """Per class and for each mean (``mean``, ``mean_all``), each score's mean and sample
    standard deviation over the folds' summaries (`_spread`)."""
    first = summaries[0]
    out: dict = {"per_class": {}}
    for name, row in first["per_class"].items():
        out["per_class"][name] = {
            m: _spread([s["per_class"][name].get(m) for s in summaries])
            for m in FOLD_SCORES
            if m in row
        }
    for key in ("mean", "mean_all"):
        if key in first:
            out[key] = {
                m: _spread([s[key].get(m) for s in summaries])
                for m in FOLD_SCORES
                if m in first[key]
            }
    return out


def evaluate_folds(
    runs: Sequence[Path],
    dataset: Path,
    spec: EvalSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: object,
) -> CrossValidation:
    """Predict each run's own validation fold of `dataset` and summarise the out-of-fold
    predictions (module docstring): each fold's report in ``RUN/evaluation/val/``, the pooled
    ``summary.json`` (with ``cross_validation``) and per-image table in `spec.out` (default:
    ``crossval/`` beside the first run). Each fold is scored without the post-processing its
    run chose on that same fold (``postprocess.json``), which would flatter it.

    Raises:
        SegtoolError: fewer than 2 runs, runs of different splits or of one fold, a fold image
            missing from `dataset`, outputs that exist (without `overwrite`) or collide.
    """
    spec = EvalSpec.build(spec, options)
    runs = [Path(r) for r in runs]
    splits = _val_folds(runs)
    record = read_run(runs[0])
    table = PER_CASE_FILE if record.volumes is not None else PER_IMAGE_FILE
    out = spec.out or runs[0].parent / "crossval"
    plan, targets = _report_plan(runs, dataset, out, spec, table)
    folds = []
    for run in runs:
        # Without the post-processing a run chose on this very fold: chosen on these images,
        # its score would be optimistic (as scoring the fold that picked the best epoch is).
        fold_spec = replace(spec, split="val", out=run / FOLD_REPORT, gallery=0, postprocess=False)
        folds.append(evaluate_model(run, dataset, fold_spec, on_progress=on_progress))
    _check_complete(runs, splits, folds)
    plan.check()
    scores = [score for fold in folds for score in fold.scores]
    summary = build_summary(scores, folds[0].names, folds[0].reader, spec)
    summary["cross_validation"] = {
        "runs": [
            {
                "run": str(run),
                "fold": split.get("fold"),
                "n_images": fold.summary["n_images"],
                "report": str(fold.summary_path),
            }
            for run, split, fold in zip(runs, splits, folds, strict=True)
        ],
        "folds_in_split": len(splits[0]["folds"]) if splits[0].get("folds") else None,
        "sd": "sample standard deviation over folds (n - 1); folds where a score is "
        "undefined are left out (folds_defined)",
        "pooled": "the rest of this document: every out-of-fold image scored as one set",
        **fold_statistics([fold.summary for fold in folds]),
    }
    with plan.build():
        write_json(targets.summary.tmp, summary)
        write_table(targets.per_image.tmp, summary)
    warnings = [w for fold in folds for w in fold.warnings]
    k = summary["cross_validation"]["folds_in_split"]
    if k is not None and len(runs) < k:
        warnings.append(f"{len(runs)} of the split's {k} folds: the pooled score covers those")
    return CrossValidation(summary, targets.summary.path, targets.per_image.path, folds, warnings)


def _check_complete(runs: Sequence[Path], splits: list[dict], folds: list[Evaluation]) -> None:
    """Every image of each run's fold was scored (a fold image missing from the dataset
    would silently leave the pooled score).

    Raises:
        SegtoolError: naming the run and the image.
    """
    for run, split, fold in zip(runs, splits, folds, strict=True):
        scored = {s.stem for s in fold.scores}
        missing = sorted(set(split["val"]) - scored)
        if missing:
            raise SegtoolError(
                f"{run}: {len(missing)} image(s) of its fold are not in the dataset, e.g. "
                f"{missing[0]!r}; pass the dataset the runs were trained on"
            )
