"""`export_model`: a run's model -> an export folder (the model file and ``segtool.json``),
kept only if the exported model agrees with the run on real images.

The folder is built beside OUT and swapped in at the end (`core.files.OutputPlan`): a failed
export or parity check leaves nothing behind, and an existing OUT stays whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segtool.core.constants import IMAGES_DIR
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.files import OutputPlan, write_json
from segtool.export.formats import ALL_AXES, save_onnx, to_onnx, to_torchscript
from segtool.export.parity import Parity, check_parity
from segtool.export.spec import CHECK_COUNT, LABEL_TOLERANCE, LOGIT_TOLERANCE
from segtool.predict.exported import (
    EXPORT_DOC,
    MODEL_FILES,
    RUNS_ON,
    describe,
    load_exported,
    metadata_props,
)
from segtool.predict.folder import find_images
from segtool.predict.predictor import Predictor, load_predictor
from segtool.train.geometry import STRIDE
from segtool.train.model import has_model
from segtool.train.runfolder import RunFolder


@dataclass
class ExportReport:
    """What `export_model` wrote and how close the exported model is to the run's."""

    out: Path
    format: str
    model_file: Path
    dynamic: list[str]
    parity: Parity
    notes: list[str] = field(default_factory=list)


def _check_options(fmt: str, check_count: int, tolerance: float, label_tolerance: float) -> None:
    check_choice("format", fmt, MODEL_FILES)
    if check_count < 1:
        raise SegtoolError(f"--check-count {check_count} must be at least 1")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise SegtoolError(f"--tolerance {tolerance} must be a finite number >= 0")
    if not 0 <= label_tolerance <= 1:  # NaN fails too
        raise SegtoolError(f"--label-tolerance {label_tolerance} must be a share in [0, 1]")


def _load_run(run: Path) -> Predictor:
    """The run's model, refused where export cannot carry it."""
    folder = RunFolder(run)
    if not has_model(folder.model_dir, weights=True):
        raise SegtoolError(
            f"{run}: no trained model to export (no {folder.model_dir.name}/ with weights); "
            "pass a run folder written by segtool train, after at least one epoch"
        )
    if folder.document and folder.volume_settings() is not None:
        raise SegtoolError(
            f"{run}: trained on volumes, which predict standardises per volume and slices; "
            "segtool export takes runs trained on images (use segtool predict for volumes)"
        )
    predictor = load_predictor(run)
    predictor.model.cpu().eval()
    return predictor


def _check_images(predictor: Predictor, given: Path | None, count: int) -> tuple[list[Path], str]:
    """The parity check's images: `given`'s, else the run's val split; the first `count`."""
    if given is not None:
        paths, source = find_images(given), str(given)
    else:
        run = predictor.run
        dataset = run.dataset() if run is not None and run.document else None
        images = dataset / IMAGES_DIR if dataset is not None else None
        val = (predictor.split or {}).get("val") or []
        if images is None or not images.is_dir() or not val:
            where = f"{images} is not there" if images is not None else "it names no dataset"
            raise SegtoolError(
                f"{predictor.source}: the export is checked on the run's val split, but {where}; "
                "pass --check-images DIR (a few images like those the model will predict)"
            )
        paths, source = find_images(images, set(val)), f"the run's val split ({images})"
    return paths[:count], source


def _sample(predictor: Predictor) -> torch.Tensor:
    """The input the exporter traces: 2 images of the run's box padded to the stride, else
    64 x 96 (height and width unequal, so that the exporter does not tie them)."""
    if predictor.size is None:
        return torch.zeros(2, 3, 2 * STRIDE, 3 * STRIDE)
    height, width = (-(-s // STRIDE) * STRIDE for s in predictor.size)
    return torch.zeros(2, 3, height, width)


def export_model(
    run: Path,
    out: Path,
    *,
    fmt: str = "onnx",
    check_images: Path | None = None,
    check_count: int = CHECK_COUNT,
    tolerance: float = LOGIT_TOLERANCE,
    label_tolerance: float = LABEL_TOLERANCE,
    overwrite: bool = False,
) -> ExportReport:
    """Export a run's model to ``OUT/model.onnx`` (or ``OUT/model.pt``) and
    ``OUT/segtool.json``, then check it against the run on `check_count` real images.

    Args:
        run: a run folder written by ``segtool train``.
        out: the export folder to write (whole, or not at all).
        fmt: ``onnx`` (opset 18, onnxruntime) or ``torchscript`` (traced).
        check_images: a folder of images for the parity check (default: the run's val split).
        check_count: how many of them.
        tolerance: the largest |logit difference| allowed.
        label_tolerance: the largest share of pixels whose label may differ.
        overwrite: replace an existing OUT.

    Raises:
        SegtoolError: no model, a run trained on volumes, OUT existing (without `overwrite`),
            OUT inside the run or the check images, no images to check on, a model the
            exporter refuses, or a parity check above a tolerance (nothing is written).
    """
    _check_options(fmt, check_count, tolerance, label_tolerance)
    plan = OutputPlan(overwrite=overwrite)
    plan.read("the run", run)
    plan.read("the check images", check_images)
    target = plan.write(out, folder=True, option="OUT")
    plan.check()
    predictor = _load_run(run)
    paths, source = _check_images(predictor, check_images, check_count)
    plan.read("the check images", paths[0].parent)
    plan.check()
    sample = _sample(predictor)
    parity = Parity(len(paths), source, tolerance=tolerance, label_tolerance=label_tolerance)
    with plan.build():
        tmp = target.tmp
        model_file = tmp / MODEL_FILES[fmt]
        if fmt == "onnx":
            fixed_ok = predictor.size is not None and predictor.resize == "stretch"
            proto, dynamic = to_onnx(predictor.model, sample, fixed_ok)
            doc = describe(predictor, fmt, dynamic)
            save_onnx(proto, model_file, metadata_props(doc))
        else:
            dynamic = ALL_AXES
            doc = describe(predictor, fmt, dynamic)
            to_torchscript(predictor.model, sample, model_file, json.dumps(doc))
        write_json(tmp / EXPORT_DOC, doc)
        check_parity(predictor, load_exported(tmp, RUNS_ON[fmt]), paths, parity)
        if not parity.passed:
            raise SegtoolError(_refusal(out, parity))
        write_json(tmp / EXPORT_DOC, {**doc, "parity": parity.to_json()})
    notes = [] if dynamic == ALL_AXES else [_fixed_note(predictor)]
    return ExportReport(out, fmt, out / MODEL_FILES[fmt], dynamic, parity, notes)


def _fixed_note(predictor: Predictor) -> str:
    height, width = _sample(predictor).shape[2:]
    return (
        f"this architecture exports with a fixed input of {height} x {width}: the run's --size "
        "padded to the stride, which every image is stretched and padded to"
    )


def _refusal(out: Path, parity: Parity) -> str:
    """The one line of a failed parity check."""
    return (
        f"{out}: the exported model disagrees with the run on {parity.images} images "
        f"({parity.source}): max |logit difference| {parity.max_logit_diff:.3g} (tolerance "
        f"{parity.tolerance:g}), {parity.differing} of {parity.pixels} pixels "
        f"({parity.differing_share:.4%}) labelled differently (tolerance "
        f"{parity.label_tolerance:.4%}); nothing was written. Try the other --format, or "
        "report the model's architecture and encoder"
    )
