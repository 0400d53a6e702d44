"""Object-level scores of one scored pair: lesion-wise Dice and HD95, detection counts,
normalised surface Dice and panoptic quality, per class (`segtool.core.objects`,
`segtool.core.surface`).

Every class but the background is scored, from the same per-class masks as every other score
(only the reference's ignore pixels are left out; a predicted ignore value predicts nothing).
Panoptic quality needs the reference's objects: the instance mask `rasterize --instances`
writes (``instances/<stem>.png`` beside the reference's ``masks/``); predicted objects are the
connected components of the predicted class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtool.core.distances import worst_distance
from segtool.core.errors import SegtoolError
from segtool.core.lesions import bounding_box, lesion_wise, widen_box
from segtool.core.masks import read_mask
from segtool.core.multilabel import ignore_value
from segtool.core.objects import (
    ObjectOptions,
    class_masks,
    label_components,
    match_objects,
)
from segtool.core.surface import surface_dice

if TYPE_CHECKING:
    from segtool.evaluate.readers import MaskReader

#: Where `rasterize --instances` puts the object ids of ``masks/<stem>.png``.
INSTANCES_DIR = "instances"


@dataclass(frozen=True)
class ObjectSetup:
    """How a pair's object-level scores are computed (`EvalSpec.object_setup`)."""

    options: ObjectOptions
    #: normalised surface Dice at this distance; None: not computed
    nsd_tolerance: float | None = None


@dataclass
class ObjectScores:
    """Object-level scores of one image or case, rows indexed by class id (background: NaN
    and zeros)."""

    #: K x 6: lesion-wise Dice, HD95, lesions scored, missed, false positives, small lesions
    lesion: np.ndarray
    #: K x 3: detection TP, FP, FN (objects)
    detected: np.ndarray
    #: K: normalised surface Dice, or None without a tolerance
    nsd: np.ndarray | None = None
    #: K x 4: panoptic TP, FP, FN and summed IoU, or None without an instance mask
    panoptic: np.ndarray | None = None

    def padded(self, k: int) -> ObjectScores:
        """The same scores for K = `k` classes (new classes: nothing to score, none counted)."""

        def pad(rows: np.ndarray | None, fill: list[float]) -> np.ndarray | None:
            if rows is None or len(rows) >= k:
                return rows
            extra = np.tile(np.array(fill, dtype=np.float64), (k - len(rows), 1))
            return np.concatenate([rows.reshape(len(rows), -1), extra]).reshape(k, *rows.shape[1:])

        nan = float("nan")
        return ObjectScores(
            lesion=pad(self.lesion, [nan, nan, 0, 0, 0, 0]),
            detected=pad(self.detected, [0, 0, 0]),
            nsd=pad(self.nsd, [nan]),
            panoptic=pad(self.panoptic, [0, 0, 0, 0]),
        )


def instance_path(reference: Path) -> Path | None:
    """The instance mask of a reference PNG mask, if `rasterize --instances` wrote one."""
    path = reference.parent.parent / INSTANCES_DIR / reference.name
    return path if path.is_file() else None


def object_settings(setup: ObjectSetup, unit: str) -> dict:
    """The options the object-level scores were computed with, for ``summary.json``."""
    options = setup.options
    return {
        "connectivity": "full" if options.connectivity is None else "face",
        "lesion_dilation": options.dilation,
        "lesion_min_size": options.min_size,
        "iou_threshold": options.iou_threshold,
        "nsd_tolerance": setup.nsd_tolerance,
        "unit": unit,
    }


def score_pair_objects(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] | None,
    reader: MaskReader,
    reference_path: Path,
    setup: ObjectSetup,
) -> ObjectScores:
    """The object-level scores of one read pair, every class but the background, each class's
    masks under the one ignore rule (label masks: `class_masks`; bit sets: `bit_masks`).

    Raises:
        SegtoolError: the reference's instance mask is not the size of its class mask.
    """
    k = reader.class_map.num_classes if reader.class_map else _top_class(reference, reader) + 1
    classes = range(1, k)
    if reader.multilabel:
        masks = bit_masks(reference, prediction, classes, k)
    else:
        masks = class_masks(reference, prediction, classes, reader.ignore_index)
    instances = None
    found = instance_path(reference_path) if reference_path.suffix == ".png" else None
    if found is not None:
        instances = read_mask(found)
        if instances.shape != reference.shape:
            raise SegtoolError(
                f"{found}: instance mask is {instances.shape[1]}x{instances.shape[0]} but its "
                f"class mask {reference_path} is {reference.shape[1]}x{reference.shape[0]}; "
                f"rasterize --instances writes both from the same annotations"
            )
    return score_objects(
        ((c, ref, pred) for c, (ref, pred) in zip(classes, masks, strict=True)),
        k,
        spacing,
        setup.options,
        setup.nsd_tolerance,
        instances,
    )


def _top_class(reference: np.ndarray, reader: MaskReader) -> int:
    values = reference[reference != reader.ignore_index]
    return int(values.max()) if values.size else 0


def bit_masks(
    reference: np.ndarray, prediction: np.ndarray, classes: Sequence[int], num_classes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`class_masks` for multi-label (bit-set) masks: each class its bit, pixels where the
    reference sets the ignore bit left out of both, a predicted ignore bit predicting nothing."""
    dtype = reference.dtype.type
    ignore = dtype(ignore_value(num_classes - 1))
    counted = (reference & ignore) == 0
    predicted = counted & ((prediction & ignore) == 0)
    for c in classes:
        bit = dtype(1 << (c - 1))
        yield ((reference & bit) != 0) & counted, ((prediction & bit) != 0) & predicted


def score_objects(
    masks: Iterable[tuple[int, np.ndarray, np.ndarray]],
    num_classes: int,
    spacing: Sequence[float] | None,
    options: ObjectOptions,
    nsd_tolerance: float | None = None,
    instances: np.ndarray | None = None,
) -> ObjectScores:
    """Object-level scores of one pair from its per-class masks.

    Each class is scored inside the box that holds both its masks, grown by the lesion
    dilation (the same numbers as on the whole array, the worst distance still the whole
    array's diagonal), with the prediction's components found once for every score.

    Args:
        masks: (class id, reference mask, prediction mask) for each scored class.
        num_classes: K, the rows of the result.
        spacing: pixel or voxel size per axis (None: pixels).
        options: how objects are found and scored.
        nsd_tolerance: normalised surface Dice at this distance; None: not computed.
        instances: the reference's object ids (0: no object), for panoptic quality.
    """
    k = num_classes
    scores = ObjectScores(
        lesion=np.zeros((k, 6)),
        detected=np.zeros((k, 3)),
        nsd=None if nsd_tolerance is None else np.full(k, np.nan),
        panoptic=None if instances is None else np.zeros((k, 4)),
    )
    scores.lesion[:, :2] = np.nan
    for c, ref, pred in masks:
        box = bounding_box(ref | pred)
        if box is None:  # the class is in neither mask: nothing to score, nothing counted
            continue
        worst = worst_distance(ref.shape, np.ones(ref.ndim) if spacing is None else spacing)
        box = widen_box(box, options.dilation, ref.shape)
        ref, pred = ref[box], pred[box]
        parts = label_components(pred, options.connectivity)
        lesion = lesion_wise(ref, pred, spacing, options, parts=parts, worst=worst)
        scores.lesion[c] = (
            lesion.dice,
            lesion.hd95,
            lesion.lesions,
            lesion.missed,
            lesion.false_positives,
            lesion.small,
        )
        objects = label_components(ref, options.connectivity)[0]
        m = match_objects(objects, parts[0], options.iou_threshold)
        scores.detected[c] = (m.tp, m.fp, m.fn)
        if scores.nsd is not None:
            scores.nsd[c] = surface_dice(ref, pred, nsd_tolerance, spacing)
        if scores.panoptic is not None:
            ids = np.where(ref, instances[box], 0)
            m = match_objects(ids, parts[0], options.iou_threshold, inclusive=False)
            scores.panoptic[c] = (m.tp, m.fp, m.fn, m.iou_sum)
    return scores
