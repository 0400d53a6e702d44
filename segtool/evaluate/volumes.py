"""Scoring predicted NIfTI label volumes against reference volumes, case by case in 3-D.

Each case is scored from all of its voxels at once (`segtool.core.metrics.count` on the whole
volume), HD95 in millimetres from the reference's voxel spacing
(`segtool.core.distances.hd95_per_class`). The aggregate is the same ``summary.json``
as for images (`segtool.evaluate.report.summarize`), a case taking an image's place: pooled
Dice/IoU/precision/recall over every voxel of every case, and ``image_mean_dice`` the mean
over cases of each case's 3-D Dice; ``hd95_unit`` says ``mm``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.distances import hd95_multilabel, hd95_per_class
from segtool.core.errors import SegtoolError
from segtool.core.files import Output, OutputPlan, write_json
from segtool.core.metrics import count, count_multilabel
from segtool.core.parallel import ProgressFn, Workers
from segtool.core.regions import Regions, parse_regions
from segtool.evaluate.report import (
    SUMMARY_FILE,
    Evaluation,
    _write_per_image_csv,
    summarize,
)
from segtool.evaluate.score import ImageScore
from segtool.sources.nifti import read_geometry, read_label
from segtool.sources.volume_folder import (
    case_name,
    is_nifti,
    is_volume_folder,
    read_volume_dataset,
)

#: Per-case scores, one row a case.
PER_CASE_FILE = "per_case.csv"
#: Predictions of probabilities that predict writes beside the labels (not scored).
_PROBABILITIES = "_probabilities"


def holds_volumes(folder: Path) -> bool:
    """Whether `folder` holds NIfTI files (and so is scored as volumes)."""
    return folder.is_dir() and any(is_nifti(p) for p in folder.iterdir())


def volume_classes(references: Path, explicit: Path | None) -> tuple[ClassMap, int | None]:
    """The class map (and nnU-Net's ignore label value): `explicit`, else the ``dataset.json``
    of the volume folder that holds `references` (its ``labelsTr/``).

    Raises:
        SegtoolError: neither is there.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise SegtoolError(f"{explicit}: no such classes file; pass a classes.json")
        return read_classes_json(explicit), None
    if is_volume_folder(references.parent):
        dataset = read_volume_dataset(references.parent)
        return dataset.class_map, dataset.label_ignore
    raise SegtoolError(
        f"{references}: no dataset.json beside it to name the labels; pass --classes "
        f"classes.json (e.g. the run's)"
    )


def _by_case(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise SegtoolError(f"{folder}: no such folder of .nii.gz volumes")
    return {
        case_name(p): p
        for p in sorted(folder.iterdir())
        if is_nifti(p) and not case_name(p).endswith(_PROBABILITIES)
    }


def score_regions(
    case: str,
    reference: np.ndarray,
    prediction: np.ndarray,
    regions: Regions,
    spacing: tuple[float, float, float],
    with_hd95: bool,
) -> ImageScore:
    """Score one case on overlapping regions (e.g. BraTS whole tumour, core, enhancing): each
    region its own binary problem, from region bit values of the whole volume."""
    k = regions.class_map.num_classes
    counts, right, counted = count_multilabel(reference, prediction, k)
    distances = None
    if with_hd95:
        present = [c for c in range(1, k) if counts.tp[c] + counts.fp[c] + counts.fn[c] > 0]
        distances = np.full(k, np.nan)
        if present:
            distances[present] = hd95_multilabel(reference, prediction, present, k, spacing)
    return ImageScore(case, counts, distances, pixels_right=right, pixels_counted=counted)


def score_case(
    item: tuple[str, Path | None, Path],
    class_map: ClassMap,
    label_ignore: int | None,
    with_hd95: bool,
    regions: Regions | None = None,
    bit_predictions: bool = False,
) -> ImageScore:
    """Read one prediction/reference pair of volumes and score it in 3-D (runs in a worker).
    With `regions`, labels become region bits (predictions too, unless `bit_predictions`:
    a model trained with --regions predicts them).

    Raises:
        SegtoolError: a prediction on another grid (shape or affine) than its reference, or
            values outside the class map.
    """
    case, pred_path, ref_path = item
    reference = read_label(ref_path, class_map, label_ignore)
    shape, spacing, affine = read_geometry(ref_path)
    if pred_path is None:
        prediction = np.zeros_like(reference)
    else:
        pred_shape, _, pred_affine = read_geometry(pred_path)
        if pred_shape != shape or not np.allclose(pred_affine, affine, rtol=0, atol=1e-4):
            raise SegtoolError(
                f"{pred_path}: not on its reference's grid ({ref_path}: shape {shape}); predict "
                f"with segtool predict, which keeps the input's shape and affine"
            )
        prediction = _read_prediction(pred_path, class_map, regions, bit_predictions)
    if regions is not None:
        bits = regions.apply(reference)
        if not bit_predictions:
            prediction = regions.apply(prediction)
        score = score_regions(
            case, bits, prediction.astype(bits.dtype), regions, spacing, with_hd95
        )
        score.missing_prediction = pred_path is None
        return score
    k, ignore = class_map.num_classes, class_map.ignore_index
    counts = count(reference, prediction, k, ignore)
    distances = None
    if with_hd95:
        present = [c for c in range(1, k) if counts.tp[c] + counts.fp[c] + counts.fn[c] > 0]
        distances = np.full(k, np.nan)
        if present:
            distances[present] = hd95_per_class(reference, prediction, present, ignore, spacing)
    score = ImageScore(case, counts, distances, missing_prediction=pred_path is None)
    score.reference_ignored = int(np.count_nonzero(reference == ignore))
    return score


def _read_prediction(
    path: Path, class_map: ClassMap, regions: Regions | None, bit_predictions: bool
) -> np.ndarray:
    """A predicted volume: class ids checked against the map, or region bits as they are."""
    if regions is None or not bit_predictions:
        return read_label(path, class_map)
    from segtool.sources.nifti import read_bits

    return read_bits(path, regions.class_map.num_classes - 1)


def evaluate_volume_dirs(
    predictions: Path,
    references: Path,
    *,
    classes: Path | None = None,
    out: Path | None = None,
    with_hd95: bool = True,
    jobs: int | None = None,
    allow_missing: bool = False,
    only: set[str] | None = None,
    regions: str | None = None,
    bit_predictions: bool = False,
    gallery: int = 0,
    images: Path | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Score a folder of predicted label volumes against reference volumes, per case in 3-D.

    Args:
        predictions: ``<case>.nii.gz`` label volumes (as segtool predict writes them).
        references: reference label volumes (e.g. a volume folder's ``labelsTr/``).
        classes: a ``classes.json``; default: the volume folder's ``dataset.json``.
        out: where ``summary.json`` and ``per_case.csv`` go; default: `predictions`.
        with_hd95: compute HD95 in mm.
        jobs: worker processes (default: every core).
        allow_missing: score references without a prediction as empty predictions.
        only: score only these cases.
        regions: ``"name=id,id;..."``: score unions of class ids as overlapping regions
            (BraTS: ``"whole=1,2,3;core=2,3;enhancing=3"``).
        bit_predictions: the predictions already hold region bits (a --regions model's).
        gallery: draw the N cases with the lowest Dice on their most wrong slice into
            ``OUT/gallery/`` (class labels, not regions).
        images: where the gallery finds the images (default: ``imagesTr/`` beside `references`).
        on_progress: called as ``(phase, done, total)`` after each case.

    Raises:
        SegtoolError: bad folders, grids or label values, missing predictions.
    """
    class_map, label_ignore = volume_classes(references, classes)
    refs, preds = _by_case(references), _by_case(predictions)
    if only is not None:
        refs = {c: p for c, p in refs.items() if c in only}
    if not refs:
        raise SegtoolError(f"{references}: no reference .nii.gz volumes to score")
    missing = sorted(refs.keys() - preds.keys())
    if missing and not allow_missing:
        raise SegtoolError(
            f"{len(missing)} case(s) without a prediction in {predictions}, e.g. {missing[0]}; "
            f"predict them or pass --allow-missing to score them as empty"
        )
    items = [(c, preds.get(c), refs[c]) for c in sorted(refs)]
    parsed = parse_regions(regions, class_map) if regions else None
    plan, summary_out, per_case_out, gallery_out = plan_volume_report(
        out or predictions,
        gallery if parsed is None else 0,
        overwrite,
        [("the predictions folder", predictions), ("the references folder", references)],
    )
    plan.check()
    work = partial(
        score_case,
        class_map=class_map,
        label_ignore=label_ignore,
        with_hd95=with_hd95,
        regions=parsed,
        bit_predictions=bit_predictions,
    )
    scores = []
    with Workers(jobs, min_items=2) as workers:
        for done, score in enumerate(workers.imap(work, items), 1):
            scores.append(score)
            if on_progress:
                on_progress("evaluate", done, len(items))
    names = list(parsed.class_map.names if parsed else class_map.names)
    summary = summarize(scores, names, class_map.ignore_index, multilabel=parsed is not None)
    summary.update(volumes=True, hd95_unit="mm")
    warnings = [f"{len(missing)} case(s) without a prediction scored as empty"] if missing else []
    with plan.build():
        write_json(summary_out.tmp, summary)
        _write_per_image_csv(per_case_out.tmp, summary)
        result = Evaluation(summary, summary_out.path, per_case_out.path, warnings)
        if gallery_out is not None:
            from segtool.evaluate.volume_gallery import make_volume_gallery

            images = images if images is not None else references.parent / "imagesTr"
            drawn = make_volume_gallery(
                summary, predictions, references, gallery_out.tmp, class_map, gallery, images
            )
            result.gallery = [gallery_out.path / p.name for p in drawn]
    if gallery and parsed is not None:
        result.warnings.append("--gallery draws class labels; not drawn with --regions")
    return result


def plan_volume_report(
    out: Path, gallery: int, overwrite: bool, inputs: list[tuple[str, Path]]
) -> tuple[OutputPlan, Output, Output, Output | None]:
    """Declare what scoring volumes reads (`inputs`) and writes (summary.json, per_case.csv,
    gallery/ in `out`) to one `OutputPlan`, the one output mechanism; the caller may add more
    and runs `OutputPlan.check` before any work."""
    plan = OutputPlan(overwrite=overwrite)
    for what, path in inputs:
        plan.read(what, path, files_only=True)
    summary_out = plan.write(out / SUMMARY_FILE, folder=False, option="--out")
    per_case_out = plan.write(out / PER_CASE_FILE, folder=False, option="--out")
    gallery_out = plan.write(out / "gallery", folder=True, option="--gallery") if gallery else None
    return plan, summary_out, per_case_out, gallery_out


def evaluate_volume_model(
    run: Path,
    dataset: Path,
    *,
    split: str = "test",
    out: Path | None = None,
    with_hd95: bool = True,
    device: str = "auto",
    batch_size: int = 8,
    tta: bool = False,
    gallery: int = 0,
    jobs: int | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Predict one split of the volume folder `dataset` with the run's model, then score it per
    case in 3-D. Predictions go to ``OUT/predictions/`` (default OUT: ``RUN/evaluation/<split>``);
    ``all`` is every case the model was not trained on.

    Raises:
        SegtoolError: an empty split, bad folders.
    """
    from segtool.core.dataset import held_out_stems
    from segtool.predict.predictor import load_predictor
    from segtool.predict.volumes import predict_volumes

    predictor = load_predictor(run)
    options = json.loads((run / "config.json").read_text()).get("options", {})
    cases = set(read_volume_dataset(dataset).by_case)
    names = held_out_stems(predictor.split, split, predictor.source, cases)
    if not names:
        raise SegtoolError(f"{dataset}: the {split} split has no cases in this volume folder")
    out = out or run / "evaluation" / split
    predictions = out / "predictions"
    # Every output checked before anything is written (predictions/ and the report).
    plan, *_ = plan_volume_report(
        out, gallery, overwrite, [("the references folder", dataset / "labelsTr")]
    )
    plan.read("the volume folder's images", dataset / "imagesTr")
    plan.read("the run's model", run / "model")
    plan.read("the run's config", run / "config.json")
    plan.read("the run's split", run / "split.json")
    plan.write(predictions, folder=True, option="--out")
    plan.check()
    predict_volumes(
        predictor,
        dataset,
        predictions,
        names=names,
        tta=tta,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
        on_progress=on_progress,
    )
    return evaluate_volume_dirs(
        predictions,
        dataset / "labelsTr",
        out=out,
        with_hd95=with_hd95,
        jobs=jobs,
        only=names,
        regions=options.get("regions"),
        bit_predictions=bool(options.get("regions")),
        gallery=gallery,
        overwrite=overwrite,
        on_progress=on_progress,
    )
