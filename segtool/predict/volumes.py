"""A run trained on a volume folder + NIfTI volumes -> NIfTI label volumes.

Each volume is read (the next one in a background thread while the model predicts this
one), standardised with the rule the run was trained with (its own non-zero
voxels, per channel), cut into slices along the run's axis, predicted slice by slice (the same
`Engine` as photos: padding, TTA, AMP) and stacked back. ``OUT/<case>.nii.gz`` has the input's
shape, affine and header (data type set to integers, no intensity scaling), so it overlays on
the image in ITK-SNAP or 3D Slicer.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtool.core.device import pick_device
from segtool.core.errors import SegtoolError
from segtool.core.files import output_folder
from segtool.core.namelist import NameList
from segtool.core.parallel import ProgressFn, read_ahead
from segtool.core.postprocess import Rule, apply_rules
from segtool.core.volumes import slice_axis, standardize, to_slices
from segtool.predict.engine import Engine
from segtool.predict.ensemble import Ensemble, Models, load_predictors, make_engine, rules_by_id
from segtool.predict.folder import PredictReport, decision_thresholds
from segtool.predict.spec import PredictSpec
from segtool.sources.nifti import Volume, load_case
from segtool.sources.volume_folder import (
    VolumeCase,
    image_cases,
    is_volume_folder,
    read_volume_dataset,
)


def find_cases(volumes: Path, settings: dict, names: set[str] | None = None) -> list[VolumeCase]:
    """The cases to predict: a volume folder's ``imagesTs`` (or, given a split's `names`, those
    labelled cases; a `NameList`'s, those cases of either), or the cases of a plain folder of
    ``.nii.gz`` files (either layout), all or those named.

    Raises:
        SegtoolError: channels that differ from the run's, no cases, or a listed name not
            found.
    """
    channels = tuple(settings["channels"])
    if not is_volume_folder(volumes):
        found = image_cases(volumes, len(channels))
    else:
        dataset = read_volume_dataset(volumes)
        if dataset.channels != channels:
            raise SegtoolError(
                f"{volumes}: channels {list(dataset.channels)}, but the run was trained on "
                f"{list(channels)}; predict volumes with the run's sequences"
            )
        labelled = [VolumeCase(c.case, c.images) for c in dataset.cases]
        found = list(dataset.test_cases)  # nothing named: imagesTs/
        if names is not None:  # a split names labelled cases; a list may name imagesTs/ too
            found = labelled + found if isinstance(names, NameList) else labelled
    if isinstance(names, NameList):
        names.check_found((c.case for c in found), volumes)
    cases = [c for c in found if c.case in names] if names is not None else found
    if not cases:
        raise SegtoolError(
            f"{volumes}: no cases to predict (no imagesTs/); pass --split test for the run's "
            f"held-out cases"
        )
    return cases


def predict_volume(
    engine: Engine | Ensemble,
    volume: Volume,
    axis: str,
    threshold: float | list[float] = 0.5,
    probabilities: bool = False,
    rules: dict[int, Rule] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels ``(X, Y, Z)`` (and, with `probabilities`, ``(X, Y, Z, K)`` float32) for one
    volume, predicted slice by slice along `axis`; `rules` post-process the whole volume
    (components in 3-D)."""
    image, _ = standardize(volume.image)
    index = slice_axis(volume.affine, axis)
    slices = to_slices(image, index)
    labels, probs = [], []
    for start in range(0, len(slices), engine.batch_size):
        batch = [
            torch.from_numpy(np.ascontiguousarray(s))
            for s in slices[start : start + engine.batch_size]
        ]
        for p in engine.probabilities(batch):
            labels.append(engine.labels(p, threshold))
            if probabilities:
                probs.append(p.float().cpu().numpy())
    label_volume = np.moveaxis(np.stack(labels), 0, index)
    if rules:
        label_volume = apply_rules(label_volume, rules, engine.p.class_map.multilabel)
    prob_volume = None
    if probabilities:
        prob_volume = np.moveaxis(np.moveaxis(np.stack(probs), 1, -1), 0, index)
    return label_volume, prob_volume


def save_like(path: Path, data: np.ndarray, volume: Volume) -> None:
    """Write `data` as NIfTI with `volume`'s affine and header (its data type, no scaling)."""
    import nibabel as nib

    header = volume.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(None, None)
    nib.save(nib.Nifti1Image(data, volume.affine, header), str(path))


def predict_volumes(
    model: Models,
    volumes: Path,
    out: Path,
    spec: PredictSpec | None = None,
    *,
    names: set[str] | None = None,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> PredictReport:
    """Predict ``OUT/<case>.nii.gz`` for every case (see `find_cases`); with `probabilities`
    also ``OUT/<case>_probabilities.nii.gz`` (float32, X x Y x Z x K). OUT appears complete
    or not at all.

    Args:
        model: a run folder trained on volumes, or its loaded `Predictor`; or several (an
            ensemble: their probabilities averaged).
        volumes: a volume folder (its ``imagesTs``, or the labelled cases in `names`), or a
            folder of ``.nii.gz`` volumes.
        out: the folder to write (whole, or not at all).
        spec: how to predict (the fields volumes use: tta, threshold, probabilities, device,
            batch_size, amp, overwrite, postprocess); or None, and keyword `options` build it.
        names: only these cases.
        on_progress: called as cases are done.

    Raises:
        SegtoolError: a run not trained on volumes, bad or missing cases, an existing OUT
            without ``overwrite``.
    """
    spec = PredictSpec.build(spec, **options)
    predictors = load_predictors(model)
    predictor = predictors[0]
    settings = predictor.run.volume_settings() if predictor.run is not None else None
    if settings is None:
        raise SegtoolError(
            f"{predictor.source}: this run was trained on images, not volumes; predict images "
            f"with it, or train on the volume folder"
        )
    cases = find_cases(volumes, settings, names)
    report = PredictReport(out)
    engine = make_engine(
        predictors, pick_device(spec.device), report.notes, tta=spec.tta,
        batch_size=spec.batch_size, amp=spec.amp,
    )  # fmt: skip
    cut = decision_thresholds(engine.p, spec.threshold, report.notes)
    rules = rules_by_id(engine.p, spec.postprocess, report.notes)
    channels = len(settings["channels"])
    inputs = [("the volume folder", volumes), *(pair for p in predictors for pair in p.inputs)]
    with output_folder(out, spec.overwrite, inputs=inputs) as tmp:
        start = time.perf_counter()
        if on_progress:  # a log gets its line before the first case
            on_progress("predict", 0, len(cases))
        # The next case is read (decoded, checked) while the model predicts this one.
        reads = read_ahead(cases, lambda case: load_case(case, channels))
        with closing(reads):  # an error here stops the reading too
            for i, (case, volume) in enumerate(zip(cases, reads, strict=True), 1):
                labels, probs = predict_volume(
                    engine, volume, settings["axis"], cut, spec.probabilities, rules
                )
                save_like(tmp / f"{case.case}.nii.gz", labels, volume)
                if probs is not None:
                    save_like(tmp / f"{case.case}_probabilities.nii.gz", probs, volume)
                report.n_images += 1
                if on_progress:
                    on_progress("predict", i, len(cases))
        report.seconds = time.perf_counter() - start
    return report
