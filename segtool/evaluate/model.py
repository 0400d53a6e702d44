"""Evaluating a trained model on a held-out split of a dataset: predict, then score."""

from __future__ import annotations

from pathlib import Path

from segtool.core.constants import CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.dataset import find_pairs, held_out_stems
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.files import OutputPlan, read_json
from segtool.core.parallel import ProgressFn
from segtool.evaluate.report import Evaluation, evaluate_dirs, plan_report
from segtool.evaluate.separate import in_run_ids, refuse_training_images, trained_on
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.predict.volumes import volume_settings

#: What --split accepts with --model: a split of the run's split.json, or every image the
#: model was not trained on.
SPLITS = ("test", "val", "train", "all")


def evaluate_model(
    run: Path,
    dataset: Path,
    *,
    split: str | None = None,
    out: Path | None = None,
    with_hd95: bool = True,
    device: str = "auto",
    batch_size: int = 4,
    tta: bool = False,
    gallery: int = 0,
    jobs: int | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Predict `dataset` (one split of it, or all of a separate test set) with the model in
    `run` and score it against the run's class map.

    The dataset the run was trained on is scored by split: ``test`` by default, from the run's
    own split.json; ``train`` must be asked for by name. Any other folder is a separate test
    set, scored whole, and refused if any of its images is one of the run's training images
    (compared by content); its masks are put in the run's class ids if its classes.json orders
    the classes differently. Predictions go to ``OUT/predictions/`` (default OUT:
    ``RUN/evaluation/<split>``, or ``RUN/evaluation/<folder name>``), then ``summary.json``,
    ``per_image.csv`` and, with `gallery`, ``gallery/`` into OUT. Existing outputs there are
    replaced only with `overwrite` (each whole, once complete), and never when they are, hold
    or lie inside what is read.

    Raises:
        SegtoolError: unknown split, a split that is empty, ``all`` without the run's
            split.json, a test set holding training images, outputs that exist or collide
            with the inputs, or bad run/dataset folders.
    """
    if split is not None:
        check_choice("split", split, SPLITS)
    if volume_settings(run) is not None:  # a run trained on a volume folder
        from segtool.evaluate.volumes import evaluate_volume_model

        result = evaluate_volume_model(
            run,
            dataset,
            split=split or "test",
            out=out,
            with_hd95=with_hd95,
            device=device,
            tta=tta,
            gallery=gallery,
            jobs=jobs,
            overwrite=overwrite,
            on_progress=on_progress,
        )
        return result
    predictor = load_predictor(run)
    pairs, _ = find_pairs(dataset, skip_unpaired=True)
    # A model trained with --regions learnt unions of the dataset's classes: score those.
    regions = _run_options(run).get("regions")
    source = trained_on(run)
    warnings: list[str] = []
    references = dataset / MASKS_DIR
    if split is None and (source is None or source.resolve() != dataset.resolve()):
        train = set(predictor.split["train"]) if predictor.split is not None else None
        warnings += refuse_training_images(run, train, dataset, pairs, jobs)
        stems = {p.stem for p in pairs}
        out = out or run / "evaluation" / dataset.name
        _check_outputs(run, dataset, out, gallery, overwrite, separate=True)
        if not regions:
            references = in_run_ids(
                dataset,
                references,
                pairs,
                predictor.class_map,
                out / "references",
                jobs,
                overwrite=overwrite,
            )
    else:
        split = split or "test"
        stems = held_out_stems(predictor.split, split, predictor.source, {p.stem for p in pairs})
        if not stems:
            raise SegtoolError(f"{dataset}: the {split} split has no images in this dataset")
        out = out or run / "evaluation" / split
        _check_outputs(run, dataset, out, gallery, overwrite)
    predictions = out / "predictions"
    predict_dir(
        predictor,
        dataset / IMAGES_DIR,
        predictions,
        stems=stems,
        device=device,
        batch_size=batch_size,
        tta=tta,
        overwrite=True,
        on_progress=on_progress,
    )
    result = evaluate_dirs(
        predictions,
        references,
        classes=dataset / "classes.json" if regions else run / "classes.json",
        out=out,
        with_hd95=with_hd95,
        jobs=jobs,
        only=stems,
        on_progress=on_progress,
        gallery=gallery,
        images=dataset / IMAGES_DIR,
        regions=regions,
        overwrite=True,  # checked above, with the predictions
    )
    result.warnings[:0] = warnings
    return result


def _check_outputs(
    run: Path, dataset: Path, out: Path, gallery: int, overwrite: bool, *, separate: bool = False
) -> None:
    """The outputs in OUT (predictions/, summary.json, per_image.csv, gallery/) against what
    is read, before anything is written: `OutputPlan.check`.

    Raises:
        SegtoolError: an output exists without `overwrite`, or collides with an input.
    """
    plan = OutputPlan(overwrite=overwrite)
    plan.read("the dataset's images", dataset / IMAGES_DIR)
    plan.read("the dataset's masks", dataset / MASKS_DIR)
    plan.read("the run's model", run / "model")
    plan.read("the run's class map", run / CLASSES_FILE)
    plan.read("the run's split", run / SPLIT_FILE)
    plan.write(out / "predictions", folder=True, option="--out")
    if separate:  # its masks may be rewritten into the run's ids (`in_run_ids`)
        plan.write(out / "references", folder=True, option="--out")
    plan_report(plan, out, gallery)
    plan.check()


def _run_options(run: Path) -> dict:
    """The training options recorded in ``RUN/config.json`` (none for a bare model folder)."""
    path = run / "config.json"
    doc = read_json(path, "run config.json", "train the run again") if path.is_file() else {}
    return doc.get("options", {}) if isinstance(doc, dict) else {}
