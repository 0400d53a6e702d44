"""Scoring one pair, whatever its kind: counts per class, distances, what the report needs.

One counting path for images and volumes: the reader supplies the arrays and their spacing;
label masks are counted by `segtool.core.metrics.count`, bit sets (multi-label masks and
regions) by `count_multilabel`, each class its own binary problem; HD95 comes from
`segtool.core.distances` with the spacing (pixels, or mm for volumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtool.core.distances import hd95_multilabel, hd95_per_class
from segtool.core.metrics import (
    Counts,
    confusion_matrix,
    count,
    count_multilabel,
    counts_from_confusion,
)
from segtool.evaluate.objects import ObjectScores, ObjectSetup, score_pair_objects

if TYPE_CHECKING:
    from segtool.evaluate.readers import MaskReader

#: Up to this many classes each pair's confusion matrix (K x (K + 1) counts) is kept.
CONFUSION_MAX_K = 256

#: One pair to score: (stem or case, prediction file or None when missing, reference file).
Item = tuple[str, "Path | None", Path]


@dataclass
class ImageScore:
    """Counts and distances of one image or case (all arrays indexed by class id)."""

    stem: str
    counts: Counts
    hd95: np.ndarray | None
    missing_prediction: bool = False
    reference_ignored: int = 0
    # Multi-label masks: pixels whose whole label set is right, and pixels counted.
    pixels_right: int | None = None
    pixels_counted: int | None = None
    # Object-level scores (lesion-wise, detection, surface Dice, panoptic), unless skipped.
    objects: ObjectScores | None = None
    # Label masks of at most CONFUSION_MAX_K classes: the K x (K + 1) confusion matrix (rows
    # the reference class, columns the predicted one, the last "predicted the ignore value");
    # the counts are read from it, so both come from one pass.
    confusion: np.ndarray | None = None


def score_pair(
    item: Item, reader: MaskReader, with_hd95: bool, objects: ObjectSetup | None = None
) -> ImageScore:
    """Read one prediction/reference pair through `reader` and score it (runs in a worker);
    with `objects`, its object-level scores too (`segtool.evaluate.objects`).

    Raises:
        SegtoolError: as the reader's `read_pair`.
    """
    stem, pred_path, ref_path = item
    reference, prediction, spacing = reader.read_pair(pred_path, ref_path)
    if reader.multilabel:
        k = reader.class_map.num_classes
        counts, right, counted = count_multilabel(reference, prediction, k)
        score = ImageScore(stem, counts, None, pixels_right=right, pixels_counted=counted)
        score.reference_ignored = int(reference.size - counted)
    else:
        ignore = reader.ignore_index
        k = reader.class_map.num_classes if reader.class_map else None
        k = k or _classes_seen(reference, prediction, ignore)
        matrix = None
        if k <= CONFUSION_MAX_K:
            matrix = confusion_matrix(reference, prediction, k, ignore)
            counts = counts_from_confusion(matrix)
        else:
            counts = count(reference, prediction, k, ignore)
        score = ImageScore(stem, counts, None, confusion=matrix)
        score.reference_ignored = int(np.count_nonzero(reference == ignore))
    if with_hd95:
        present = [c for c in range(1, k) if counts.tp[c] + counts.fp[c] + counts.fn[c] > 0]
        score.hd95 = np.full(k, np.nan)
        if present and reader.multilabel:
            score.hd95[present] = hd95_multilabel(reference, prediction, present, k, spacing)
        elif present:
            score.hd95[present] = hd95_per_class(
                reference, prediction, present, reader.ignore_index, spacing
            )
    if objects is not None:
        score.objects = score_pair_objects(
            reference, prediction, spacing, reader, ref_path, objects
        )
    score.missing_prediction = pred_path is None
    return score


def _classes_seen(reference: np.ndarray, prediction: np.ndarray, ignore_index: int) -> int:
    top = 0
    for mask in (reference, prediction):
        values = mask[mask != ignore_index]
        if values.size:
            top = max(top, int(values.max()))
    return top + 1
