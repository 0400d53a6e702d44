"""Choosing a run's post-processing on its validation split, as nnU-Net does: predict the
split as ``segtool predict`` does (without post-processing), then, per class, try keeping
the largest component and dropping components under N pixels (voxels), and keep a rule only
when it raises that class's validation Dice. The choice and the scores with and without it
go into the run's ``postprocess.json`` (`RunFolder.write_postprocess`), which predict,
``evaluate --model`` and export then apply.

The predictions are scored through evaluate's own readers and ignore rule (`reader_for`,
`class_masks`, `bit_masks`), so the Dice here is the one ``evaluate --model --split val``
reports; `segtool train` calls `choose_postprocessing` when a run finishes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from segtool.core.errors import SegtoolError
from segtool.core.files import remove
from segtool.core.objects import class_masks
from segtool.core.parallel import ProgressFn
from segtool.core.postprocess import ComponentCounts, choose_rules, class_plane
from segtool.evaluate.kinds import reader_for
from segtool.evaluate.model import model_data
from segtool.evaluate.objects import bit_masks
from segtool.evaluate.report import pair_masks
from segtool.evaluate.spec import EvalSpec
from segtool.train.runfolder import RunFolder

#: What a component's size counts, by what the reader scores.
UNITS = {"image": "pixels", "case": "voxels"}


@dataclass
class PostprocessChoice:
    """What `choose_postprocessing` chose and wrote."""

    #: the ``postprocess.json`` document (rules, validation Dice with and without, tried)
    document: dict
    #: where it was written
    path: Path


def choose_postprocessing(
    run: Path,
    dataset: Path | None = None,
    *,
    device: str = "auto",
    tta: bool = False,
    batch_size: int | None = None,
    on_progress: ProgressFn | None = None,
) -> PostprocessChoice:
    """Choose the run's post-processing on its validation split and write it into the run.

    Args:
        run: the run folder.
        dataset: the dataset (or volume folder) it was trained on; default: the one its
            config.json names.
        device: where to predict.
        tta: predict with flips averaged (as you will predict).
        batch_size: images (or slices) per step; None: predict's default.
        on_progress: called as ``(phase, done, total)``.

    Raises:
        SegtoolError: a run without a recorded dataset or validation images, bad folders.
    """
    folder = RunFolder(run)
    dataset = dataset if dataset is not None else folder.dataset()
    if dataset is None:
        raise SegtoolError(f"{run}: the run names no dataset; pass the dataset it was trained on")
    data = model_data(run, dataset)
    scratch = Path(tempfile.mkdtemp(prefix=".segtool-postprocess-", dir=run))
    try:
        spec = EvalSpec(
            split="val", out=scratch, device=device, tta=tta, batch_size=batch_size,
            postprocess=False, overwrite=True,
        )  # fmt: skip
        target = data.target(spec)
        references = data.predict(target, spec, on_progress)
        reader = reader_for(references, target.spec)
        scoring = replace(target.spec, only=frozenset(target.names))
        items, _, _ = pair_masks(target.out / "predictions", references, reader, scoring)
        class_map = data.predictor.class_map
        classes = range(1, class_map.num_classes)
        per_class: dict[str, list[ComponentCounts]] = {class_map.names[c]: [] for c in classes}
        multilabel = reader.multilabel
        for _, prediction_path, reference_path in items:
            reference, prediction, _ = reader.read_pair(prediction_path, reference_path)
            if multilabel:
                masks = bit_masks(reference, prediction, classes, class_map.num_classes)
            else:
                masks = class_masks(reference, prediction, classes, reader.ignore_index)
            for c, (ref, counted) in zip(classes, masks, strict=True):
                plane = class_plane(prediction, c, multilabel)
                per_class[class_map.names[c]].append(ComponentCounts.of(plane, ref, counted))
    finally:
        remove(scratch)
    document = {
        "chosen_on": "val",
        "items": len(items),
        "item": reader.item,
        "unit": UNITS[reader.item],
        "connectivity": "full",
        "tta": tta,
        **choose_rules(per_class),
    }
    folder.write_postprocess(document)
    return PostprocessChoice(document, folder.postprocess_file)
