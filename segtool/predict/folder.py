"""A trained model + images -> label masks (and probabilities, overlays), streamed.

Whole images are padded to the model's stride and cropped back; ``tile`` predicts large
images in overlapping tiles blended with a Gaussian weight; ``tta`` averages flipped
predictions. Reading runs in DataLoader workers and writing in worker threads or processes
(`writing.py`, a few batches in flight at most), so the model sets the pace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from segtool.core.classes import mode_for
from segtool.core.constants import IMAGE_SUFFIXES, MULTICLASS
from segtool.core.dataset import index_by_stem
from segtool.core.device import pick_device
from segtool.core.errors import InvalidInputError, SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.images import list_images
from segtool.core.namelist import NameList
from segtool.core.parallel import ProgressFn, default_jobs
from segtool.core.postprocess import Rule
from segtool.core.shards import SHARD_FILE
from segtool.predict.annotations import AnnotationSink, annotation_sink
from segtool.predict.engine import Engine
from segtool.predict.ensemble import (
    Ensemble,
    Models,
    finish_labels,
    load_predictors,
    make_engine,
    predicted,
    rules_by_id,
)
from segtool.predict.exported import is_export
from segtool.predict.predictor import Predictor
from segtool.predict.reading import decode_jpegs, image_loader, readable
from segtool.predict.shards import shard_complete, shard_images, shard_record
from segtool.predict.spec import PredictSpec
from segtool.predict.writing import Outputs, Writer, process_jobs, use_processes
from segtool.train.model import STRIDE, has_model


@dataclass
class PredictReport:
    """What `predict_dir` did."""

    out: Path
    n_images: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Throughput of the whole run."""
        return self.n_images / self.seconds if self.seconds else 0.0


def writer_for(outputs: Outputs, device: torch.device, sink: AnnotationSink | None) -> Writer:
    """predict's writers: 2 threads beside a model on the CPU; on a GPU 4 threads, or worker
    processes (`writing.process_jobs`) where they pay (`writing.use_processes`)."""
    cores = default_jobs()
    if device.type != "cpu" and use_processes(cores, sink is not None):
        return Writer(outputs, process_jobs(cores), processes=True)
    return Writer(outputs, 2 if device.type == "cpu" else 4, annotations=sink)


def find_images(folder: Path, stems: set[str] | None = None) -> list[Path]:
    """Image files in `folder` (sorted), optionally only the given stems (a split's: those
    in the folder; a `NameList`'s: every one must be there).

    Raises:
        SegtoolError: no such folder, no images in it, or a listed name not found.
    """
    if folder.is_file():
        raise SegtoolError(f"{folder}: a file; pass the folder that holds the images")
    if not folder.is_dir():
        raise SegtoolError(f"{folder}: no such folder of images")
    paths = list_images(folder)
    index_by_stem(paths, "each image's mask is OUT/<stem>.png")
    if isinstance(stems, NameList):
        stems.check_found((p.stem for p in paths), folder)
    if stems is not None:
        paths = [p for p in paths if p.stem in stems]
    if not paths:
        what = "of the selected images " if stems is not None else ""
        raise SegtoolError(
            f"{folder}: no images {what}found ({', '.join(IMAGE_SUFFIXES)}); check the path"
        )
    return paths


def _notes(engine: Engine | Ensemble, tile: int | None) -> list[str]:
    """What the user should know about how their options were applied."""
    notes = []
    if tile is not None and engine.tile != tile:
        notes.append(
            f"--tile {tile} rounded up to {engine.tile}, a multiple of the model stride {STRIDE}"
        )
    if engine.p.size is not None and tile is not None:
        notes.append(
            f"the model was trained at --size {engine.p.size}: images are resized, --tile is unused"
        )
    return notes


def decision_thresholds(
    predictor: Predictor, threshold: float | None, notes: list[str]
) -> float | list[float]:
    """The probability cut: `threshold` if given; for a multi-label model without one, the
    run's tuned per-class thresholds (announced in `notes`), else 0.5.

    Raises:
        SegtoolError: a `threshold` for a multi-class model, which would be ignored (each pixel
            gets its most probable class).
    """
    cmap = predictor.class_map
    if threshold is not None and mode_for(cmap.num_classes, cmap.multilabel) == MULTICLASS:
        raise SegtoolError(
            f"--threshold {threshold}: the model has {cmap.num_classes} classes and gives each "
            "pixel the most probable one; a cut applies to binary and multi-label models only, "
            "drop --threshold"
        )
    if threshold is not None or not predictor.class_map.multilabel or not predictor.thresholds:
        return 0.5 if threshold is None else threshold
    names = predictor.class_map.names[1:]
    shown = ", ".join(f"{name} {predictor.thresholds[name]:g}" for name in names)
    notes.append(f"per-class thresholds tuned on the validation split of the run: {shown}")
    return [predictor.thresholds[name] for name in names]


def _predict_all(
    loader: DataLoader,
    engine: Engine | Ensemble,
    writer: Writer,
    report: PredictReport,
    *,
    threshold: float | list[float],
    rules: dict[int, Rule],
    on_progress: ProgressFn | None,
) -> None:
    """Predict every batch and queue its outputs; unreadable images go to ``report.failed``."""
    done, total = 0, len(loader.dataset)
    keep = writer.outputs.probabilities or writer.annotations is not None
    if on_progress:  # a log gets its line before the first batch
        on_progress("predict", 0, total)
    for batch in loader:
        decode_jpegs(batch, engine.device, engine.p.normalization)
        good = [item for item in batch if "error" not in item]
        report.failed += [item["error"] for item in batch if "error" in item]
        if good:
            probs = predicted(engine, [item["input"] for item in good], keep)
            outputs = []
            for item, p in zip(good, probs, strict=True):
                labels = finish_labels(engine, p, threshold, rules)
                saved = p.cpu().numpy() if keep else None
                picture = item.get("image") if writer.outputs.overlays else None
                outputs.append((item["path"], labels, saved, picture))
            writer.submit(outputs)  # waits while IN_FLIGHT batches are being written
        report.n_images += len(good)
        done += len(batch)
        if on_progress:
            on_progress("predict", done, total)
    writer.wait()


def predict_dir(
    model: Models,
    images: Path,
    out: Path,
    spec: PredictSpec | None = None,
    *,
    classes: Path | None = None,
    stems: set[str] | None = None,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> PredictReport:
    """Predict a label mask for every image in a folder.

    Writes ``OUT/<stem>.png`` (palette label masks at each image's size as displayed, as
    rasterize writes them), with `probabilities` also ``OUT/<stem>.npz`` (float16 ``probs``,
    K x H x W), with `overlay_images` ``OUT/overlays/<stem>.jpg``, with `annotations` the
    masks as that annotation format (`segtool.predict.annotations`). OUT appears complete or
    not at all. Multi-label models write multi-label masks (`segtool.core.multilabel`), each class
    cut at `threshold`, else at the run's thresholds tuned on the validation split (a note
    says so), else at 0.5; their probabilities are K-1 x H x W. The run's post-processing
    (``postprocess.json``, chosen on the validation split) is applied to each mask unless
    `postprocess` is False. Several models are an ensemble: their probabilities averaged.

    Args:
        model: a run folder, a bare model folder (with `classes`), an export folder
            (``segtool export``; with the backend of its format), or a loaded `Predictor`;
            or several (an ensemble).
        images: the folder of images.
        out: the folder to write (whole, or not at all).
        spec: how to predict; or None, and keyword `options` (`PredictSpec` fields) build it.
        classes: the classes.json of a bare model folder.
        stems: only the images with these stems.
        on_progress: called as images are done.

    Raises:
        SegtoolError: bad model/classes/options, no images, an existing OUT without
            ``overwrite``, outputs colliding with inputs; unreadable images (then nothing is
            written) unless ``skip_invalid``.
    """
    spec = PredictSpec.build(spec, **options)
    if spec.shard and shard_complete(out, spec.shard, find_images(images, stems)):
        return PredictReport(out, notes=[f"{out}: shard {spec.shard} is already complete"])
    plan = OutputPlan(overwrite=spec.overwrite)
    plan.read("the images folder", images)
    for each in [model] if isinstance(model, (Path, Predictor)) else model:
        if isinstance(each, Path) and (each / "model").is_dir():
            plan.read("the model", each / "model")
        elif isinstance(each, Path) and (has_model(each) or is_export(each)):
            plan.read("the model", each)
    target = plan.write(out, folder=True, option="OUT")
    plan.check()
    predictors = load_predictors(model, classes, spec.backend)
    for what, path in (pair for p in predictors for pair in p.inputs):
        plan.read(what, path)
    plan.check()
    sink = annotation_sink(predictors[0], spec, images, out)
    paths = find_images(images, stems)
    paths = shard_images(paths, spec.shard) if spec.shard else paths
    torch_device = pick_device(spec.device)
    notes: list[str] = []
    engine = make_engine(
        predictors, torch_device, notes, tile=spec.tile, overlap=spec.overlap, tta=spec.tta,
        batch_size=spec.batch_size, amp=spec.amp,
    )  # fmt: skip
    report = PredictReport(out, notes=[*notes, *_notes(engine, spec.tile)])
    cut = decision_thresholds(engine.p, spec.threshold, report.notes)
    rules = rules_by_id(engine.p, spec.postprocess, report.notes)
    paths, sizes, report.failed = readable(paths)
    if report.failed and not spec.skip_invalid:
        raise InvalidInputError(
            f"{len(report.failed)} of {len(paths) + len(report.failed)} images cannot be read, "
            f"nothing was written (remove them or pass --skip-invalid)",
            report.failed,
        )
    if not paths:
        raise SegtoolError(f"{images}: no image could be read: {report.failed[0]}")
    loader = image_loader(
        paths, sizes, engine, spec.batch_size, spec.workers, overlays=spec.overlay_images
    )
    with plan.build():
        tmp = target.tmp
        start = time.perf_counter()
        outputs = Outputs(tmp, engine.p.class_map, spec.overlay_images, spec.probabilities)
        with writer_for(outputs, torch_device, sink) as writer:
            _predict_all(
                loader,
                engine,
                writer,
                report,
                threshold=cut,
                rules=rules,
                on_progress=on_progress,
            )
        if sink is not None:
            sink.finish(tmp)
        if spec.shard:
            write_json(tmp / SHARD_FILE, shard_record(spec.shard, paths))
        report.seconds = time.perf_counter() - start
        if not report.n_images:
            raise SegtoolError(f"{images}: no image could be read: {report.failed[0]}")
        if report.failed and not spec.skip_invalid:
            # Damaged data found only on decoding: nothing is replaced.
            raise InvalidInputError(
                f"{len(report.failed)} image(s) could not be decoded, nothing was written "
                f"(remove them or pass --skip-invalid)",
                report.failed,
            )
    return report
