"""Evaluating a trained model on a held-out split of a dataset: predict, then score.

One `evaluate_model` for images and volumes: what differs (which files a split names, where
the references and images are, how predictions are made) is a `ModelData` per kind, chosen
once from the run's record; the scoring is `evaluate_dirs`, the one pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from segtool.core.constants import CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.dataset import Pair, find_pairs, held_out_stems
from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, checked_first
from segtool.core.parallel import ProgressFn
from segtool.evaluate.readers import PER_CASE_FILE, PER_IMAGE_FILE
from segtool.evaluate.report import Evaluation, evaluate_dirs, plan_report
from segtool.evaluate.runs import RunRecord, read_run
from segtool.evaluate.separate import in_run_ids, refuse_training_images
from segtool.evaluate.spec import SPLITS, EvalSpec
from segtool.predict.ensemble import load_predictors
from segtool.predict.predictor import Predictor
from segtool.train.runfolder import RunFolder

__all__ = ["SPLITS", "evaluate_model"]


@dataclass
class Target:
    """What one evaluation predicts and scores, and where."""

    names: set[str]
    out: Path
    references: Path
    #: the spec `evaluate_dirs` scores with (class map, regions, images, names)
    spec: EvalSpec
    #: what is read, for the output checks: (what, path)
    inputs: list[tuple[str, Path]]
    warnings: list[str] = field(default_factory=list)
    #: a separate test set's pairs, whose masks are put in the run's ids
    separate: list[Pair] | None = None


@dataclass
class ModelData:
    """A run trained on images and a dataset folder (the image kind)."""

    run: Path
    dataset: Path
    record: RunRecord
    predictor: Predictor
    #: an ensemble's runs (the first is `predictor`); empty: `predictor` alone
    members: list[Predictor] = field(default_factory=list)

    #: the per-item table its reader writes
    table_file: ClassVar[str] = PER_IMAGE_FILE

    def target(self, spec: EvalSpec) -> Target:
        """The split's images (or all of a separate test set) and where their report goes.

        Raises:
            SegtoolError: an empty split, a test set holding training images.
        """
        pairs, _ = find_pairs(self.dataset, skip_unpaired=True)
        regions = self.record.options.get("regions")
        source = self.record.dataset
        run, dataset = self.run, self.dataset
        scoring = replace(
            spec,
            classes=dataset / CLASSES_FILE if regions else run / CLASSES_FILE,
            regions=regions,
            images=dataset / IMAGES_DIR,
        )
        inputs = [
            ("the dataset's images", dataset / IMAGES_DIR),
            ("the dataset's masks", dataset / MASKS_DIR),
            ("the run's model", run / "model"),
            ("the run's class map", run / CLASSES_FILE),
            ("the run's split", run / SPLIT_FILE),
        ]
        stems = {p.stem for p in pairs}
        if spec.split is None and (source is None or source.resolve() != dataset.resolve()):
            split = self.predictor.split
            train = set(split["train"]) if split is not None else None
            warnings = refuse_training_images(run, source, train, dataset, pairs, spec.jobs)
            out = spec.out or run / "evaluation" / dataset.name
            separate = None if regions else pairs
            return Target(stems, out, dataset / MASKS_DIR, scoring, inputs, warnings, separate)
        name = spec.split or "test"
        stems = held_out_stems(self.predictor.split, name, self.predictor.source, stems)
        if not stems:
            other = "test" if name == "val" else "val"
            raise SegtoolError(
                f"{dataset}: the {name} split has no images in this dataset; score another "
                f"split (--split {other})"
            )
        return Target(
            stems, spec.out or run / "evaluation" / name, dataset / MASKS_DIR, scoring, inputs
        )

    def predict(self, target: Target, spec: EvalSpec, on_progress: ProgressFn | None) -> Path:
        """Predict the target's images into ``OUT/predictions``; the references to score with
        (a separate test set's masks in the run's ids)."""
        from segtool.predict.folder import predict_dir

        if target.separate is not None:
            target.references = in_run_ids(
                self.dataset,
                target.references,
                target.separate,
                self.predictor.class_map,
                target.out / "references",
                spec.jobs,
                overwrite=True,  # checked with the report
            )
        predict_dir(
            self.members or self.predictor,
            self.dataset / IMAGES_DIR,
            target.out / "predictions",
            stems=target.names,
            device=spec.device,
            batch_size=spec.batch_size or 4,
            tta=spec.tta,
            postprocess=spec.postprocess,
            overwrite=True,  # checked with the report, before anything is written
            on_progress=on_progress,
        )
        return target.references


@dataclass
class VolumeModelData(ModelData):
    """A run trained on a volume folder and a volume folder: cases scored in 3-D."""

    table_file: ClassVar[str] = PER_CASE_FILE

    def target(self, spec: EvalSpec) -> Target:
        """The split's cases and where their report goes.

        Raises:
            SegtoolError: an empty split.
        """
        from segtool.sources.volume_folder import read_volume_dataset

        run, dataset = self.run, self.dataset
        cases = set(read_volume_dataset(dataset).by_case)
        name = spec.split or "test"
        names = held_out_stems(self.predictor.split, name, self.predictor.source, cases)
        if not names:
            raise SegtoolError(f"{dataset}: the {name} split has no cases in this volume folder")
        regions = self.record.options.get("regions")
        # The predictions are in the run's ids; the labels in dataset.json's (matched by name).
        classes = None if regions else run / CLASSES_FILE
        scoring = replace(spec, classes=classes, regions=regions, bit_predictions=bool(regions))
        inputs = [
            ("the references folder", dataset / "labelsTr"),
            ("the volume folder's images", dataset / "imagesTr"),
            ("the run's model", run / "model"),
            ("the run's config", RunFolder(run).config_file),
            ("the run's split", run / SPLIT_FILE),
        ]
        out = spec.out or run / "evaluation" / name
        return Target(names, out, dataset / "labelsTr", scoring, inputs)

    def predict(self, target: Target, spec: EvalSpec, on_progress: ProgressFn | None) -> Path:
        """Predict the target's cases into ``OUT/predictions`` (NIfTI label volumes)."""
        from segtool.predict.volumes import predict_volumes

        predict_volumes(
            self.members or self.predictor,
            self.dataset,
            target.out / "predictions",
            names=target.names,
            tta=spec.tta,
            postprocess=spec.postprocess,
            device=spec.device,
            batch_size=spec.batch_size or 8,
            overwrite=True,  # checked with the report, before anything is written
            on_progress=on_progress,
        )
        return target.references


def _check_outputs(
    target: Target, spec: EvalSpec, table_file: str, *, confusion: bool
) -> OutputPlan:
    """Every output in OUT (predictions/, references/ for a separate set, the report) against
    what is read, before anything is written: `OutputPlan.check`.

    Raises:
        SegtoolError: an output exists without `overwrite`, or collides with an input.
    """
    plan = OutputPlan(overwrite=spec.overwrite)
    for what, path in target.inputs:
        plan.read(what, path)
    plan.write(target.out / "predictions", folder=True, option="--out")
    if target.separate is not None:  # its masks may be rewritten into the run's ids (`in_run_ids`)
        plan.write(target.out / "references", folder=True, option="--out")
    plan_report(plan, target.out, spec.gallery, table_file, confusion=confusion)
    plan.check()
    return plan


def model_data(runs: Path | Sequence[Path], dataset: Path) -> ModelData:
    """The run (or the runs of an ensemble, checked to agree) and the dataset, as the kind
    the first run was trained on."""
    runs = [runs] if isinstance(runs, Path) else list(runs)
    record = read_run(runs[0])
    predictors = load_predictors(runs)
    kind = VolumeModelData if record.volumes is not None else ModelData
    return kind(runs[0], dataset, record, predictors[0], predictors if len(runs) > 1 else [])


def _check_held_out(data: ModelData, target: Target) -> None:
    """Refuse to score an ensemble on images one of its runs trained on.

    Raises:
        SegtoolError: naming the image, the run and the fix.
    """
    for member in data.members[1:]:
        trained = set((member.split or {}).get("train", []))
        # a separate test set is checked by content against the first run's training images
        seen = sorted(target.names & trained) if target.separate is None else []
        if seen:
            raise SegtoolError(
                f"{seen[0]}: in the train split of {member.source}, so the ensemble would be "
                f"scored on an image it trained on; ensemble runs that share their held-out "
                f"split (or score a separate test set)"
            )
        target.inputs += [(f"the model of {member.source}", path) for _, path in member.inputs]


def evaluate_model(
    run: Path | Sequence[Path],
    dataset: Path,
    spec: EvalSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: object,
) -> Evaluation:
    """Predict `dataset` (one split of it, or all of a separate test set) with the model in
    `run` and score it against the run's class map. Several runs are an ensemble (their
    probabilities averaged); it is refused if a scored image is in any run's train split.

    The dataset the run was trained on is scored by split: ``test`` by default, from the run's
    own split.json; ``train`` must be asked for by name. Any other image folder is a separate
    test set, scored whole, and refused if any of its images is one of the run's training
    images (compared by content); its masks are put in the run's class ids if its classes.json
    orders the classes differently. A run trained on a volume folder scores the split's cases
    in 3-D. Predictions go to ``OUT/predictions/`` (default OUT: ``RUN/evaluation/<split>``,
    or ``RUN/evaluation/<folder name>``), then the report into OUT. Existing outputs there are
    replaced only with `overwrite` (each whole, once complete), and never when they are, hold
    or lie inside what is read.

    Args:
        run: the run folder (or a bare model folder), or several (an ensemble).
        dataset: the dataset (or volume folder) to predict and score.
        spec: the options (`EvalSpec`: split, out, with_hd95, device, batch_size, tta,
            gallery, jobs, overwrite).
        on_progress: called as ``(phase, done, total)``.
        **options: `EvalSpec` fields, replacing those of `spec`.

    Raises:
        SegtoolError: unknown split, a split that is empty, ``all`` without the run's
            split.json, a test set holding training images, outputs that exist or collide
            with the inputs, or bad run/dataset folders.
    """
    spec = EvalSpec.build(spec, options)
    data = model_data(run, dataset)
    target = data.target(spec)
    _check_held_out(data, target)
    exclusive = not (data.record.options.get("regions") or data.predictor.class_map.multilabel)
    checked = _check_outputs(target, spec, data.table_file, confusion=exclusive)
    with checked_first(checked):  # what appears in OUT while this runs is never replaced
        references = data.predict(target, spec, on_progress)
        result = evaluate_dirs(
            target.out / "predictions",
            references,
            replace(target.spec, out=target.out, only=frozenset(target.names), overwrite=True),
            on_progress=on_progress,
        )
    result.warnings[:0] = target.warnings
    return result
