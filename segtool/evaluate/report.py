"""Scoring predicted masks against reference masks: one folder pair, one report, any kind.

One pipeline for images and volumes, layered as nnU-Net's evaluator is: a reader per kind
(`segtool.evaluate.kinds.reader_for`) -> counts and distances of one pair
(`segtool.evaluate.score.score_pair`) -> the folder's aggregate (`summarize`) ->
``summary.json``, the per-item table (``per_image.csv``, or ``per_case.csv`` for volumes) and
the gallery of the worst items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from segtool.core.classes import make_class_map
from segtool.core.constants import IGNORE_INDEX, IMAGES_DIR, MASKS_DIR
from segtool.core.dataset import index_by_stem
from segtool.core.errors import SegtoolError
from segtool.core.files import Output, OutputPlan, write_json
from segtool.core.masks import binary_255_error
from segtool.core.names import twin_note, twins
from segtool.core.parallel import ProgressFn, Workers, with_progress
from segtool.evaluate.confusion import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    add_confusion,
    pad_matrix,
    write_confusion,
)
from segtool.evaluate.kinds import reader_for
from segtool.evaluate.objects import object_settings
from segtool.evaluate.readers import MaskReader
from segtool.evaluate.score import ImageScore, Item, score_pair
from segtool.evaluate.shards import SCORES_FILE, numbered_names, shard_document, summary_from
from segtool.evaluate.spec import EvalSpec
from segtool.evaluate.summary import SUMMARY_FILE, write_table

GALLERY_DIR = "gallery"
CONFUSION_FILES = (CONFUSION_CSV, CONFUSION_PNG)


@dataclass
class Evaluation:
    """The result of `evaluate_dirs`: the summary document and where it was written."""

    summary: dict
    summary_path: Path
    #: the per-item table (``per_image.csv`` or ``per_case.csv``)
    per_image_path: Path
    warnings: list[str] = field(default_factory=list)
    gallery: list[Path] = field(default_factory=list)
    #: what the summary was made of, so that evaluations can be pooled (`build_summary`)
    scores: list[ImageScore] = field(default_factory=list, repr=False)
    names: list[str] = field(default_factory=list)
    reader: MaskReader | None = field(default=None, repr=False)
    #: confusion.csv (beside it confusion.png), for label masks and volumes
    confusion_path: Path | None = None


@dataclass
class ReportTargets:
    """Where a report goes: summary.json, the per-item table and (optionally) the gallery."""

    summary: Output
    per_image: Output
    gallery: Output | None
    shard: Output | None = None  #: --shard: shard_scores.json, for --merge
    #: confusion.csv and confusion.png (none for multi-label masks and regions)
    confusion: tuple[Output, Output] | None = None


def plan_report(
    plan: OutputPlan,
    out: Path,
    gallery: int,
    table_file: str,
    shard: bool = False,
    *,
    confusion: bool = True,
) -> ReportTargets:
    """Declare the report's outputs in `out` to `plan` (`table_file`: the reader's;
    `confusion`: whether the scores are exclusive classes, which have a confusion matrix)."""
    return ReportTargets(
        plan.write(out / SUMMARY_FILE, folder=False, option="--out"),
        plan.write(out / table_file, folder=False, option="--out"),
        plan.write(out / GALLERY_DIR, folder=True, option="--gallery") if gallery else None,
        plan.write(out / SCORES_FILE, folder=False, option="--out") if shard else None,
        tuple(plan.write(out / n, folder=False, option="--out") for n in CONFUSION_FILES)
        if confusion
        else None,
    )


def _report_file(path: Path) -> bool:
    """Whether `path` is evaluate's own confusion.png (confusion.csv beside it), written into
    the predictions folder by an earlier run: a picture, never a mask to score."""
    return path.name == CONFUSION_PNG and (path.parent / CONFUSION_CSV).is_file()


def _is_dataset_masks(folder: Path) -> bool:
    """Whether `folder` is a dataset's ``masks/`` (its ``images/`` beside it)."""
    return folder.name == MASKS_DIR and (folder.parent / IMAGES_DIR).is_dir()


def _what_it_is(folder: Path) -> str:
    """The fix for a folder without masks that a user easily gives: a dataset (its masks are
    in masks/) or a run folder (evaluate --model scores it)."""
    from segtool.train.runfolder import MODEL_DIR

    if (folder / MASKS_DIR).is_dir():
        return (
            f"it is a dataset: pass its masks, {folder / MASKS_DIR}, or score a model on it "
            f"with segtool evaluate --model RUN {folder}"
        )
    if (folder / MODEL_DIR).is_dir():
        return f"it is a run folder: score it with segtool evaluate --model {folder} DATASET"
    return "check the path"


def pair_masks(
    predictions: Path, references: Path, reader: MaskReader, spec: EvalSpec
) -> tuple[list[Item], list[str], list[str]]:
    """Pair prediction and reference files by the reader's name (stem, or case name).

    Returns:
        (pairs of (name, prediction or None, reference), missing names, extra names).

    Raises:
        SegtoolError: a folder is missing or empty, two files share a name up to case or
            suffix, nothing pairs up, or (without `allow_missing`) a reference has no
            prediction.
    """
    found = []
    for folder, role in ((predictions, "prediction"), (references, "reference")):
        if not folder.is_dir():
            raise SegtoolError(
                f"{folder}: no such {role} folder; pass a folder of {reader.pattern}"
            )
        files = sorted(p for p in folder.iterdir() if reader.keep(p) and not _report_file(p))
        masks = index_by_stem(files, f"{role}s are paired by {reader.item} name", reader.key)
        if not masks:
            raise SegtoolError(
                f"{folder}: no {role} masks ({reader.pattern}) found; {_what_it_is(folder)}"
            )
        found.append(masks)
    preds, refs = found
    if spec.shard is not None:  # this shard's block of the references; other shards' files
        keep = set(spec.shard.take(sorted(refs)))  # are theirs, neither missing nor extra
        refs = {stem: path for stem, path in refs.items() if stem in keep}
        preds = {stem: path for stem, path in preds.items() if stem in keep}
    if spec.only is not None:
        refs = {stem: path for stem, path in refs.items() if stem in spec.only}
        preds = {stem: path for stem, path in preds.items() if stem in spec.only}
        if not refs:
            raise SegtoolError(f"{references}: none of the selected {reader.item}s has a reference")
    missing = sorted(refs.keys() - preds.keys())
    extra = sorted(preds.keys() - refs.keys())
    others = twins(extra)
    for stem in missing:  # not scored as missing, even with --allow-missing
        if note := twin_note(stem, others):
            raise SegtoolError(
                f"{predictions}: the prediction for reference {refs[stem].name} is named "
                f"in another spelling{note}"
            )
    if len(missing) == len(refs):
        raise SegtoolError(
            f"{predictions} and {references} share no file names (e.g. "
            f"{refs[next(iter(refs))].name}); masks are paired by name, so name predictions "
            f"like their references"
        )
    if spec.only_predicted:  # the predicted subset: the others are left out, not scored
        refs = {stem: path for stem, path in refs.items() if stem in preds}
        return [(stem, preds[stem], refs[stem]) for stem in sorted(refs)], missing, extra
    if missing and not spec.allow_missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SegtoolError(
            f"{predictions}: no prediction for {len(missing)} reference(s): {shown}; predict "
            f"them, or pass --allow-missing to score them as empty predictions"
        )
    pairs = [(stem, preds.get(stem), refs[stem]) for stem in sorted(refs)]
    return pairs, missing, extra


def evaluate_dirs(
    predictions: Path,
    references: Path,
    spec: EvalSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: object,
) -> Evaluation:
    """Score a folder of predicted masks against a folder of reference masks: PNG label masks,
    multi-label PNGs, ``--regions`` (each class its own binary problem), or NIfTI label
    volumes (each case in 3-D, HD95 in mm).

    Args:
        predictions: folder of predicted masks, named like the references.
        references: folder of reference masks (e.g. a dataset's ``masks/``, or a volume
            folder's ``labelsTr/``).
        spec: the options (`EvalSpec`: classes, out, with_hd95, jobs, allow_missing, only,
            gallery, images, regions, bit_predictions, overwrite).
        on_progress: called as ``(phase, done, total)`` after each item.
        **options: `EvalSpec` fields, replacing those of `spec`.

    Raises:
        SegtoolError: bad folders, sizes or grids, mask values or classes file, or existing
            outputs without `overwrite`.
    """
    spec = EvalSpec.build(spec, options)
    for folder, role in ((predictions, "prediction"), (references, "reference")):
        if not folder.is_dir():
            raise SegtoolError(f"{folder}: no such {role} folder; pass a folder of masks")
    if spec.out is None and _is_dataset_masks(predictions):
        raise SegtoolError(
            f"{predictions}: a dataset's reference masks given as the predictions; the report "
            f"would be written among them: the order is PREDICTIONS REFERENCES (or pass --out)"
        )
    reader = reader_for(references, spec)
    plan = OutputPlan(overwrite=spec.overwrite)
    plan.read("the predictions folder", predictions, files_only=True)
    plan.read("the references folder", references, files_only=True)
    plan.read("the class map", spec.classes)
    targets = plan_report(
        plan,
        spec.out or predictions,
        spec.gallery,
        reader.table_file,
        shard=spec.shard is not None,
        confusion=not reader.multilabel,
    )
    plan.check()
    with plan.build():
        result = score_into(targets, predictions, references, spec, reader, on_progress)
    if targets.gallery is not None:
        result.gallery = [targets.gallery.path / p.name for p in result.gallery]
    return result


def score_into(
    targets: ReportTargets,
    predictions: Path,
    references: Path,
    spec: EvalSpec,
    reader: MaskReader | None = None,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Score `predictions` against `references` and write the report into the temporaries of
    `targets` (inside `OutputPlan.build`); the result names the final paths."""
    reader = reader or reader_for(references, spec)
    warnings = []
    if reader.class_map is None:
        warnings.append(
            f"no classes.json beside or in {references}: class ids found in the masks are used "
            f"as names and {IGNORE_INDEX} as the ignore value; pass --classes to name them"
        )
    pairs, missing, extra = pair_masks(predictions, references, reader, spec)
    if extra:
        warnings.append(
            f"{len(extra)} prediction(s) without a reference ignored: "
            + ", ".join(extra[:5])
            + (", ..." if len(extra) > 5 else "")
        )
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.append(
            f"--only-predicted: {len(pairs)} {reader.item}(s) with a prediction scored, "
            f"{len(missing)} reference(s) without one left out: {shown}"
            if spec.only_predicted
            else f"{len(missing)} reference(s) without a prediction scored as empty"
        )
    objects = spec.object_setup(reader.lesion_min_size)
    work = partial(score_pair, reader=reader, with_hd95=spec.with_hd95, objects=objects)
    scores, confusion = [], None
    # Without HD95 or object scores a PNG pair takes about a millisecond: workers pay only
    # for larger folders.
    slow = spec.with_hd95 or objects is not None
    min_items = 2 if slow else reader.min_pairs_for_workers
    with Workers(spec.jobs, min_items=min_items) as workers:
        for score in with_progress(workers.imap(work, pairs), "evaluate", len(pairs), on_progress):
            confusion = add_confusion(confusion, score)
            scores.append(score)
    if reader.class_map is None:
        names = numbered_names(max(s.counts.num_classes for s in scores))
    else:
        names = list(reader.class_map.names)
    context = summary_context(names, reader, spec)
    summary = summary_from(scores, context)
    if spec.only_predicted:
        summary["references_left_out"] = missing
    if reader.refuses_binary_255:
        _refuse_binary_255(scores, references, predictions, reader.ignore_index)
    matrix = None if confusion is None else pad_matrix(confusion, len(names))
    if targets.shard is not None:
        write_json(targets.shard.tmp, shard_document(spec.shard, scores, context, matrix))
    write_json(targets.summary.tmp, summary)
    write_table(targets.per_image.tmp, summary)
    result = Evaluation(summary, targets.summary.path, targets.per_image.path, warnings)
    result.scores, result.names, result.reader = scores, names, reader
    if targets.confusion is not None and matrix is not None:
        csv_out, png_out = targets.confusion
        write_confusion(csv_out.tmp, png_out.tmp, matrix, context, bool(summary.get("volumes")))
        result.confusion_path = csv_out.path
    if targets.gallery is not None and spec.gallery:
        from segtool.evaluate.gallery import make_gallery

        images = spec.images if spec.images is not None else references.parent / reader.images_dir
        result.gallery = make_gallery(
            summary,
            {stem: (pred, ref) for stem, pred, ref in pairs if pred is not None},
            targets.gallery.tmp,
            reader if reader.class_map else _named(reader, names),
            spec.gallery,
            images,
            spec.gallery_by,
        )
    return result


def summary_context(names: list[str], reader: MaskReader, spec: EvalSpec) -> dict:
    """What a summary is built from besides the items' scores (`shards.summary_from`): the
    classes `names`, what `reader` reads and adds, the intervals' seed and the object
    settings. Kept in a shard's scores file, so --merge builds the same summary."""
    context = {
        "names": names,
        "ignore_index": reader.ignore_index,
        "multilabel": reader.multilabel,
        "background_scored": bool(reader.class_map and reader.class_map.background_scored),
        "fields": reader.summary_fields,
        "seed": spec.seed,
        "table_file": reader.table_file,
        "objects": None,
    }
    objects = spec.object_setup(reader.lesion_min_size)
    if objects is not None:
        unit = reader.summary_fields.get("hd95_unit", "px")
        context["objects"] = object_settings(objects, unit)
    return context


def build_summary(
    scores: list[ImageScore], names: list[str], reader: MaskReader, spec: EvalSpec
) -> dict:
    """The ``summary.json`` document of `scores` (classes `names`, read by `reader`): pooled
    scores and means (`summarize`), the reader's fields, object-level scores and intervals.
    Counts are sums, so the scores of several evaluations joined give their pooled summary."""
    return summary_from(scores, summary_context(names, reader, spec))


def _named(reader: MaskReader, names: list[str]) -> MaskReader:
    """`reader` with a class map made of `names` (for the gallery's colours)."""
    from dataclasses import replace

    return replace(reader, class_map=make_class_map(names))


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
