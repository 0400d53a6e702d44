"""Scoring predicted label masks against reference masks: one folder pair, one report.

Layered as counts (one image, `segtool.core.metrics`) -> one image's scores -> the folder's
aggregate -> ``summary.json`` and ``per_image.csv``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE, IGNORE_INDEX, MASK_SUFFIX
from segtool.core.dataset import index_by_stem
from segtool.core.distances import hd95_per_class
from segtool.core.errors import SegtoolError
from segtool.core.files import Output, OutputPlan, atomic_path, list_files, write_json
from segtool.core.masks import binary_255_error, read_mask
from segtool.core.metrics import MaskValueError, check_values, count
from segtool.core.parallel import ProgressFn, Workers
from segtool.evaluate.multilabel import bit_reader, score_bit_files
from segtool.evaluate.score import ImageScore
from segtool.evaluate.summary import summarize

SUMMARY_FILE = "summary.json"
#: Fewer pairs (without HD95 or --jobs) are scored in this process: workers would not pay.
MIN_PAIRS_FOR_WORKERS = 64
GALLERY_DIR = "gallery"
PER_IMAGE_FILE = "per_image.csv"


def _score(
    stem: str,
    reference: np.ndarray,
    prediction: np.ndarray,
    num_classes: int | None,
    ignore_index: int,
    with_hd95: bool,
) -> ImageScore:
    k = num_classes or _classes_seen(reference, prediction, ignore_index)
    counts = count(reference, prediction, k, ignore_index)
    distances = None
    if with_hd95:
        present = [c for c in range(1, k) if counts.tp[c] + counts.fp[c] + counts.fn[c] > 0]
        distances = np.full(k, np.nan)
        if present:
            distances[present] = hd95_per_class(reference, prediction, present, ignore_index)
    return ImageScore(stem, counts, distances)


def _classes_seen(reference: np.ndarray, prediction: np.ndarray, ignore_index: int) -> int:
    top = 0
    for mask in (reference, prediction):
        values = mask[mask != ignore_index]
        if values.size:
            top = max(top, int(values.max()))
    return top + 1


def _score_files(
    item: tuple[str, Path | None, Path],
    num_classes: int | None,
    ignore_index: int,
    with_hd95: bool,
) -> ImageScore:
    """Read one prediction/reference pair and score it (runs in a worker process)."""
    stem, pred_path, ref_path = item
    reference = read_mask(ref_path)
    if pred_path is None:
        prediction = np.zeros_like(reference)
    else:
        prediction = read_mask(pred_path)
        if prediction.shape != reference.shape:
            raise SegtoolError(
                f"{pred_path}: prediction is {prediction.shape[1]}x{prediction.shape[0]} but its "
                f"reference {ref_path} is {reference.shape[1]}x{reference.shape[0]} (width x "
                f"height); predict at the reference's size"
            )
    for path, mask in ((ref_path, reference), (pred_path, prediction)):
        try:
            check_values(mask, num_classes, ignore_index)
        except MaskValueError as exc:
            raise SegtoolError(
                f"{path}: {exc}; label masks hold class ids, so check --classes (K = {num_classes})"
            ) from exc
    score = _score(stem, reference, prediction, num_classes, ignore_index, with_hd95)
    score.missing_prediction = pred_path is None
    score.reference_ignored = int(np.count_nonzero(reference == ignore_index))
    return score


def find_classes(reference_dir: Path, explicit: Path | None) -> ClassMap | None:
    """The class map: `explicit`, else ``classes.json`` beside or inside the reference folder."""
    if explicit is not None:
        if not explicit.is_file():
            raise SegtoolError(f"{explicit}: no such classes file; pass a classes.json")
        return read_classes_json(explicit)
    for candidate in (reference_dir.parent / CLASSES_FILE, reference_dir / CLASSES_FILE):
        if candidate.is_file():
            return read_classes_json(candidate)
    return None


def pair_masks(
    prediction_dir: Path, reference_dir: Path, allow_missing: bool, only: set[str] | None = None
) -> tuple[list[tuple[str, Path | None, Path]], list[str], list[str]]:
    """Pair prediction and reference PNGs by stem.

    Returns:
        (pairs of (stem, prediction or None, reference), missing stems, extra stems).

    Raises:
        SegtoolError: a folder is missing or empty, nothing pairs up, or (without
            `allow_missing`) a reference has no prediction.
    """
    found = []
    for folder, role in ((prediction_dir, "prediction"), (reference_dir, "reference")):
        if not folder.is_dir():
            raise SegtoolError(f"{folder}: no such {role} folder; pass a folder of PNG masks")
        masks = index_by_stem(
            list_files(folder, (MASK_SUFFIX,)), f"{role}s are paired with their images by stem"
        )
        if not masks:
            raise SegtoolError(f"{folder}: no {role} masks (*.png) found; check the path")
        found.append(masks)
    preds, refs = found
    if only is not None:
        refs = {stem: path for stem, path in refs.items() if stem in only}
        preds = {stem: path for stem, path in preds.items() if stem in only}
        if not refs:
            raise SegtoolError(f"{reference_dir}: none of the selected images has a reference mask")
    missing = sorted(refs.keys() - preds.keys())
    extra = sorted(preds.keys() - refs.keys())
    if len(missing) == len(refs):
        raise SegtoolError(
            f"{prediction_dir} and {reference_dir} share no file names (e.g. {next(iter(refs))}"
            f".png); masks are paired by stem, so name predictions like their references"
        )
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SegtoolError(
            f"{prediction_dir}: no prediction for {len(missing)} reference(s): {shown}; predict "
            f"them, or pass --allow-missing to score them as empty predictions"
        )
    pairs = [(stem, preds.get(stem), refs[stem]) for stem in sorted(refs)]
    return pairs, missing, extra


@dataclass
class Evaluation:
    """The result of `evaluate_dirs`: the summary document and where it was written."""

    summary: dict
    summary_path: Path
    per_image_path: Path
    warnings: list[str] = field(default_factory=list)
    gallery: list[Path] = field(default_factory=list)


def _write_per_image_csv(path: Path, summary: dict) -> None:
    names = list(summary["per_class"])
    metrics = [
        m for m in ("dice", "iou", "hd95") if summary["per_image"] and m in summary["per_image"][0]
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *(f"{m}_{n}" for n in names for m in metrics)])
        for row in summary["per_image"]:
            values = [row[m].get(n) for n in names for m in metrics]
            writer.writerow([row["image"], *("" if v is None else f"{v:.6g}" for v in values)])


@dataclass
class ReportTargets:
    """Where a report goes: summary.json, per_image.csv and (optionally) the gallery folder."""

    summary: Output
    per_image: Output
    gallery: Output | None


def plan_report(plan: OutputPlan, out: Path, gallery: int) -> ReportTargets:
    """Declare the report's outputs in `out` to `plan`."""
    return ReportTargets(
        plan.write(out / SUMMARY_FILE, folder=False, option="--out"),
        plan.write(out / PER_IMAGE_FILE, folder=False, option="--out"),
        plan.write(out / GALLERY_DIR, folder=True, option="--gallery") if gallery else None,
    )


def evaluate_dirs(
    predictions: Path,
    references: Path,
    *,
    classes: Path | None = None,
    out: Path | None = None,
    with_hd95: bool = True,
    jobs: int | None = None,
    allow_missing: bool = False,
    only: set[str] | None = None,
    gallery: int = 0,
    images: Path | None = None,
    regions: str | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Score a folder of predicted label PNGs against a folder of reference PNGs (multi-label
    masks and `regions`: each class its own binary problem, `segtool.evaluate.multilabel`).

    Args:
        predictions: folder of predicted masks, named like the references.
        references: folder of reference masks (e.g. a dataset's ``masks/``).
        classes: a ``classes.json``; default: the one beside or inside `references`, else the
            ids found in the masks are used as names (ignore value 255).
        out: where ``summary.json`` and ``per_image.csv`` go; default: `predictions`.
        with_hd95: compute HD95 (the slowest metric).
        jobs: worker processes; None uses every core (none for fewer than
            `MIN_PAIRS_FOR_WORKERS` pairs without HD95, where they cost more than they save).
        allow_missing: score references without a prediction as empty predictions.
        only: score only these stems.
        gallery: also draw the N images with the lowest Dice into ``OUT/gallery/``.
        images: where the gallery finds the images (default: ``images/`` beside `references`).
        regions: ``"name=id,id;..."``: score unions of the exclusive class ids as overlapping
            regions (references, and exclusive predictions, are turned into region bits).
        overwrite: replace an existing summary.json, per_image.csv or gallery.
        on_progress: called as ``(phase, done, total)`` after each image.

    Raises:
        SegtoolError: bad folders, sizes, mask values or classes file, or existing outputs
            without `overwrite`.
    """
    for folder, role in ((predictions, "prediction"), (references, "reference")):
        if not folder.is_dir():
            raise SegtoolError(f"{folder}: no such {role} folder; pass a folder of PNG masks")
    plan = OutputPlan(overwrite=overwrite)
    plan.read("the predictions folder", predictions, files_only=True)
    plan.read("the references folder", references, files_only=True)
    plan.read("the class map", classes)
    targets = plan_report(plan, out or predictions, gallery)
    plan.check()
    with plan.build():
        result = score_into(
            targets,
            predictions,
            references,
            classes=classes,
            with_hd95=with_hd95,
            jobs=jobs,
            allow_missing=allow_missing,
            only=only,
            gallery=gallery,
            images=images,
            regions=regions,
            on_progress=on_progress,
        )
    if targets.gallery is not None:
        result.gallery = [targets.gallery.path / p.name for p in result.gallery]
    return result


def score_into(
    targets: ReportTargets,
    predictions: Path,
    references: Path,
    *,
    classes: Path | None = None,
    with_hd95: bool = True,
    jobs: int | None = None,
    allow_missing: bool = False,
    only: set[str] | None = None,
    gallery: int = 0,
    images: Path | None = None,
    regions: str | None = None,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Score `predictions` against `references` and write the report into the temporaries of
    `targets` (inside `OutputPlan.build`); the result names the final paths."""
    class_map, reader = bit_reader(find_classes(references, classes), regions, references)
    warnings = []
    if class_map is None:
        warnings.append(
            f"no classes.json beside or in {references}: class ids found in the masks are used "
            f"as names and {IGNORE_INDEX} as the ignore value; pass --classes to name them"
        )
    pairs, missing, extra = pair_masks(predictions, references, allow_missing, only)
    if extra:
        warnings.append(
            f"{len(extra)} prediction(s) without a reference ignored: "
            + ", ".join(extra[:5])
            + (", ..." if len(extra) > 5 else "")
        )
    if missing:
        warnings.append(f"{len(missing)} reference(s) without a prediction scored as empty")
    ignore = class_map.ignore_index if class_map else IGNORE_INDEX
    k = class_map.num_classes if class_map else None
    if reader is None:
        work = partial(_score_files, num_classes=k, ignore_index=ignore, with_hd95=with_hd95)
    else:
        work = partial(score_bit_files, reader=reader, with_hd95=with_hd95)
    scores = []
    # Without HD95 a pair takes about a millisecond: workers pay only for larger folders.
    with Workers(jobs, min_items=2 if with_hd95 else MIN_PAIRS_FOR_WORKERS) as workers:
        for done, score in enumerate(workers.imap(work, pairs), 1):
            scores.append(score)
            if on_progress:
                on_progress("evaluate", done, len(pairs))
    if class_map is None:
        k = max(s.counts.num_classes for s in scores)
        names = ["background" if c == 0 else str(c) for c in range(max(k, 2))]
    else:
        names = list(class_map.names)
    summary = summarize(
        scores,
        names,
        ignore,
        multilabel=reader is not None,
        background_scored=bool(class_map and class_map.background_scored),
    )
    if reader is None:
        _refuse_binary_255(scores, references, predictions, ignore)
    write_json(targets.summary.tmp, summary)
    _write_per_image_csv(targets.per_image.tmp, summary)
    result = Evaluation(summary, targets.summary.path, targets.per_image.path, warnings)
    if targets.gallery is not None and gallery:
        from segtool.core.classes import make_class_map
        from segtool.evaluate.gallery import make_gallery

        cmap = class_map or make_class_map(names)
        result.gallery = make_gallery(
            summary,
            predictions,
            references,
            targets.gallery.tmp,
            cmap,
            gallery,
            images if images is not None else references.parent / "images",
            reader,
        )
    return result


def _refuse_binary_255(
    scores: list[ImageScore], references: Path, predictions: Path, ignore: int
) -> None:
    """Masks with ignore pixels but no foreground pixel at all are almost always 0/255 binary
    masks made elsewhere: scoring them would silently report nothing (references) or nothing
    but misses (predictions)."""
    reference_fg = sum(int((s.counts.tp[1:] + s.counts.fn[1:]).sum()) for s in scores)
    if reference_fg == 0 and any(s.reference_ignored for s in scores):
        error = binary_255_error(references, ignore)
        if error:
            raise error
    predicted_fg = sum(int((s.counts.tp[1:] + s.counts.fp[1:]).sum()) for s in scores)
    if predicted_fg == 0 and sum(s.counts.abstained for s in scores):
        error = binary_255_error(predictions, ignore)
        if error:
            raise error
