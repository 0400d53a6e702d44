"""Evaluating a trained model on a held-out split of a dataset: predict, then score."""

from __future__ import annotations

import json
from pathlib import Path

from segtool.core.constants import IMAGES_DIR, MASKS_DIR
from segtool.core.dataset import find_pairs, split_stems
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.parallel import ProgressFn
from segtool.evaluate.report import Evaluation, evaluate_dirs
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
    split: str = "test",
    out: Path | None = None,
    with_hd95: bool = True,
    device: str = "auto",
    batch_size: int = 4,
    tta: bool = False,
    gallery: int = 0,
    jobs: int | None = None,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Predict one split of `dataset` with the model in `run` and score it.

    Predictions go to ``OUT/predictions/`` (default OUT: ``RUN/evaluation/<split>``), then
    ``summary.json``, ``per_image.csv`` and, with `gallery`, ``gallery/`` into OUT. The split
    comes from the run's own split.json; ``train`` must be asked for by name.

    Raises:
        SegtoolError: unknown split, a split that is empty, or bad run/dataset folders.
    """
    check_choice("split", split, SPLITS)
    if volume_settings(run) is not None:  # a run trained on a volume folder
        from segtool.evaluate.volumes import evaluate_volume_model

        result = evaluate_volume_model(
            run,
            dataset,
            split=split,
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
    stems = (
        {p.stem for p in pairs}
        if split == "all"
        else split_stems(predictor.split, split, predictor.source)
    )
    if split == "all" and predictor.split is not None:
        stems -= set(predictor.split["train"])  # never score images the model was trained on
    stems &= {p.stem for p in pairs}
    if not stems:
        raise SegtoolError(f"{dataset}: the {split} split has no images in this dataset")
    out = out or run / "evaluation" / split
    # A model trained with --regions learnt unions of the dataset's classes: score those.
    regions = _run_options(run).get("regions")
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
        dataset / MASKS_DIR,
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
    return result


def _run_options(run: Path) -> dict:
    """The training options recorded in ``RUN/config.json`` (none for a bare model folder)."""
    try:
        return json.loads((run / "config.json").read_text()).get("options", {})
    except (OSError, ValueError, AttributeError):
        return {}
