"""`EvalSpec`: every option of ``segtool evaluate``, typed, checked once.

`evaluate_dirs` and `evaluate_model` take one (or keyword arguments that build one), so the
options travel as one frozen value instead of a dozen keyword arguments per function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from segtool.core.bootstrap import SEED
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.objects import BRATS_DILATION, IMAGE_MIN_SIZE, IOU_THRESHOLD, ObjectOptions
from segtool.core.shards import Shard
from segtool.evaluate.objects import ObjectSetup

#: What --split accepts with --model: a split of the run's split.json, or every image the
#: model was not trained on.
SPLITS = ("test", "val", "train", "all")
#: What --connectivity accepts: objects join at corners too (full), or at faces only.
CONNECTIVITY = ("full", "face")
#: What --gallery-by accepts.
GALLERY_RANKS = ("dice", "lesion_dice")


@dataclass(frozen=True)
class EvalSpec:
    """How to score (`evaluate_dirs`), and with --model how to predict first (`evaluate_model`).

    Attributes:
        classes: a ``classes.json``; default: the one beside or inside the references (a
            volume folder's ``dataset.json`` for NIfTI references), else the ids found.
        out: where the report goes; default: the predictions folder, or
            ``RUN/evaluation/<split or folder>`` with a model.
        with_hd95: compute HD95 (the slowest metric).
        jobs: worker processes; None: every core (none for small folders without HD95).
        allow_missing: score references without a prediction as empty predictions.
        only_predicted: score only the references that have a prediction (a predicted
            subset); the others are left out and counted, not scored.
        only: score only these stems (images) or case names (volumes).
        shard: score only this shard's block of the references (by name) and write its
            items' scores to ``shard_scores.json`` for ``--merge`` (`segtool.evaluate.shards`).
        gallery: also draw the N images (or cases) with the lowest Dice into ``OUT/gallery/``.
        images: where the gallery finds the images (default: ``images/``, or ``imagesTr/``,
            beside the references).
        regions: ``"name=id,id;..."``: score unions of exclusive class ids as overlapping
            regions (each its own binary problem).
        bit_predictions: the predictions already hold region bits (a --regions model's).
        overwrite: replace existing outputs (each whole, once complete).
        split: with a model: which split of the run's dataset (``test`` by default; any
            other folder is a separate test set, scored whole).
        device: with a model: ``auto``, ``cpu``, ``cuda``, ``mps``.
        batch_size: with a model: images (or slices) per step; None: predict's default for
            the kind (4 images, 8 slices).
        tta: with a model: average flipped predictions.
        postprocess: with a model: apply the run's post-processing chosen on the validation
            split (``postprocess.json``), as predict does.
        objects: object-level scores: lesion-wise Dice and HD95, detection, panoptic quality
            (where the references have instance masks) and, with `nsd_tolerance`, surface Dice.
        lesion_dilation: lesion-wise: dilation steps joining near reference lesions (BraTS's 3).
        lesion_min_size: lesion-wise: reference lesions of at most this size (pixels, or mm^3
            for volumes) are left out; None: the reader's default (images 0: every object
            counts; volumes BraTS's 50 mm^3; `segtool.core.objects.IMAGE_MIN_SIZE`).
        iou_threshold: the IoU at which a predicted object finds a reference object.
        connectivity: of objects: ``full`` (corner neighbours; default) or ``face``.
        nsd_tolerance: normalised surface Dice at this distance (pixels, or mm for volumes);
            None: not computed.
        seed: seeds the bootstrap intervals.
        gallery_by: what the gallery ranks by: ``dice`` (each image's mean Dice) or
            ``lesion_dice`` (its mean lesion-wise Dice; needs `objects`).
    """

    classes: Path | None = None
    out: Path | None = None
    with_hd95: bool = True
    jobs: int | None = None
    allow_missing: bool = False
    only_predicted: bool = False
    only: frozenset[str] | None = None
    gallery: int = 0
    images: Path | None = None
    regions: str | None = None
    bit_predictions: bool = False
    overwrite: bool = False
    split: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    tta: bool = False
    postprocess: bool = True
    objects: bool = True
    lesion_dilation: int = BRATS_DILATION
    lesion_min_size: float | None = None
    iou_threshold: float = IOU_THRESHOLD
    connectivity: str = "full"
    nsd_tolerance: float | None = None
    seed: int = SEED
    gallery_by: str = "dice"
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.only is not None and not isinstance(self.only, frozenset):
            object.__setattr__(self, "only", frozenset(self.only))
        if self.split is not None:
            check_choice("split", self.split, SPLITS)
        if self.only_predicted and self.allow_missing:
            raise SegtoolError(
                "--only-predicted leaves out references without a prediction, --allow-missing "
                "scores them as empty; pass one of them"
            )
        check_choice("connectivity", self.connectivity, CONNECTIVITY)
        check_choice("gallery-by", self.gallery_by, GALLERY_RANKS)
        if self.gallery_by == "lesion_dice" and not self.objects:
            raise SegtoolError(
                "--gallery-by lesion_dice ranks by an object-level score; drop --no-objects"
            )

    def object_setup(self, min_size: float = IMAGE_MIN_SIZE) -> ObjectSetup | None:
        """How each pair's object-level scores are computed, `min_size` the kind's minimum
        lesion size where none was given; None when they are skipped."""
        if not self.objects:
            return None
        options = ObjectOptions(
            dilation=self.lesion_dilation,
            min_size=min_size if self.lesion_min_size is None else self.lesion_min_size,
            connectivity=1 if self.connectivity == "face" else None,
            iou_threshold=self.iou_threshold,
            distances=self.with_hd95,
        )
        return ObjectSetup(options, self.nsd_tolerance)

    @classmethod
    def build(cls, spec: EvalSpec | None, options: Mapping[str, object]) -> EvalSpec:
        """`spec` (default: all defaults) with `options` (field names) replacing its values.

        Raises:
            TypeError: an option that is not a field, as for any unknown keyword argument.
        """
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        return replace(spec or cls(), **options)
