"""Scoring multi-label masks: each class its own binary problem (TP/FP/FN, HD95 per class).

Masks are read as bit values (`segtool.core.multilabel`), either straight from multi-label PNGs
or, with ``--regions``, from exclusive label maps turned into region bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.distances import hd95_multilabel
from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask
from segtool.core.metrics import MaskValueError, check_values, count_multilabel
from segtool.core.multilabel import MARKER, read_multilabel_values
from segtool.core.regions import Regions, parse_regions
from segtool.evaluate.score import ImageScore


@dataclass(frozen=True)
class BitReader:
    """Reads a mask as bit values of `class_map` (multi-label), through `regions` if given."""

    class_map: ClassMap
    regions: Regions | None = None

    def read(self, path: Path) -> np.ndarray:
        """The bit values of one mask file.

        Raises:
            SegtoolError: unreadable file, a value or bit the class map does not have.
        """
        k = self.class_map.num_classes
        if self.regions is None or _is_multilabel(path):
            # With regions, predictions of a region model are already multi-label.
            return read_multilabel_values(path, k)
        labels = read_mask(path)
        source = self.regions.source
        try:
            check_values(labels, source.num_classes, source.ignore_index)
        except MaskValueError as exc:
            raise SegtoolError(
                f"{path}: {exc}; --regions refers to the dataset's class ids"
            ) from exc
        return self.regions.apply(labels)


def _is_multilabel(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(256)
    return b"tEXt" + b"\0".join(MARKER) in head


def bit_reader(
    class_map: ClassMap | None, regions: str | None, references: Path
) -> tuple[ClassMap | None, BitReader | None]:
    """The class map to score with, and the reader of bit values when scoring is multi-label:
    with `regions` (the regions' map) or for a multi-label `class_map`; else no reader.

    Raises:
        SegtoolError: `regions` without a class map, or bad regions.
    """
    if regions is not None:
        if class_map is None:
            raise SegtoolError(
                f"--regions refers to class ids, but there is no classes.json beside or in "
                f"{references}; pass --classes"
            )
        parsed = parse_regions(regions, class_map)
        return parsed.class_map, BitReader(parsed.class_map, parsed)
    if class_map is not None and class_map.multilabel:
        return class_map, BitReader(class_map)
    return class_map, None


def label_set_accuracy(scores: list[ImageScore]) -> float:
    """Pixel accuracy of multi-label masks: the share of counted pixels (not ignored by the
    reference) whose whole label set is right; NaN when no pixel counts."""
    counted = sum(s.pixels_counted for s in scores)
    return sum(s.pixels_right for s in scores) / counted if counted else float("nan")


def score_bits(
    stem: str,
    reference: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    with_hd95: bool,
) -> ImageScore:
    """Counts, exact-label-set pixels and HD95 per class of one multi-label pair."""
    counts, right, counted = count_multilabel(reference, prediction, num_classes)
    distances = None
    if with_hd95:
        present = [
            c for c in range(1, num_classes) if counts.tp[c] + counts.fp[c] + counts.fn[c] > 0
        ]
        distances = np.full(num_classes, np.nan)
        if present:
            distances[present] = hd95_multilabel(reference, prediction, present, num_classes)
    return ImageScore(stem, counts, distances, pixels_right=right, pixels_counted=counted)


def score_bit_files(
    item: tuple[str, Path | None, Path], reader: BitReader, with_hd95: bool
) -> ImageScore:
    """Read one prediction/reference pair as bit values and score it (runs in a worker)."""
    stem, pred_path, ref_path = item
    reference = reader.read(ref_path)
    prediction = np.zeros_like(reference) if pred_path is None else reader.read(pred_path)
    if prediction.shape != reference.shape:
        raise SegtoolError(
            f"{pred_path}: prediction is {prediction.shape[1]}x{prediction.shape[0]} but its "
            f"reference {ref_path} is {reference.shape[1]}x{reference.shape[0]} (width x "
            f"height); predict at the reference's size"
        )
    score = score_bits(stem, reference, prediction, reader.class_map.num_classes, with_hd95)
    score.missing_prediction = pred_path is None
    score.reference_ignored = int(reference.size - score.pixels_counted)
    return score
