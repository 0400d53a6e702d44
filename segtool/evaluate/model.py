"""Evaluating a trained model on a held-out split of a dataset: predict, then score."""

from __future__ import annotations

import json
from pathlib import Path

from segtool.core.constants import IMAGES_DIR, MASKS_DIR
from segtool.core.dataset import Pair, find_pairs, split_stems
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.parallel import ProgressFn
from segtool.evaluate.report import Evaluation, evaluate_dirs
from segtool.evaluate.separate import in_run_ids, refuse_training_images, trained_on
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import Predictor, load_predictor
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
    ``per_image.csv`` and, with `gallery`, ``gallery/`` into OUT.

    Raises:
        SegtoolError: unknown split, a split that is empty, a test set holding training
            images, or bad run/dataset folders.
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
            jobs=jobs,
            on_progress=on_progress,
        )
        if gallery:
            result.warnings.append("--gallery draws images; it is not drawn for volumes yet")
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
        if not regions:
            references = in_run_ids(
                dataset, references, pairs, predictor.class_map, out / "references", jobs
            )
    else:
        split = split or "test"
        stems = _split_stems(predictor, pairs, split)
        if not stems:
            raise SegtoolError(f"{dataset}: the {split} split has no images in this dataset")
        out = out or run / "evaluation" / split
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
    )
    result.warnings[:0] = warnings
    return result


def _split_stems(predictor: Predictor, pairs: list[Pair], split: str) -> set[str]:
    """The stems of one split of the run's own dataset that this folder holds."""
    stems = (
        {p.stem for p in pairs}
        if split == "all"
        else split_stems(predictor.split, split, predictor.source)
    )
    if split == "all" and predictor.split is not None:
        stems -= set(predictor.split["train"])  # never score images the model was trained on
    return stems & {p.stem for p in pairs}


def _run_options(run: Path) -> dict:
    """The training options recorded in ``RUN/config.json`` (none for a bare model folder)."""
    try:
        return json.loads((run / "config.json").read_text()).get("options", {})
    except (OSError, ValueError, AttributeError):
        return {}
