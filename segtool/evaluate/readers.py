"""Mask readers: one per kind of mask file, each supplying the arrays, the spacing and a view.

As nnU-Net's ``compute_metrics`` takes an image reader, evaluate's one pipeline
(`segtool.evaluate.report`) pairs, reads, counts and draws every kind through a `MaskReader`:
PNG label masks (`PngLabels`), PNG bit sets and ``--regions`` on PNGs (`PngBits`), NIfTI
label volumes (`NiftiLabels`, optionally as regions). The reader names what it reads
(``image`` or ``case``), its table file, the spacing of its arrays (pixels: none; volumes: mm
from the header) and the 2-D view the gallery draws. `reader_for` is the one place that looks
at what the references are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.constants import IGNORE_INDEX, IMAGES_DIR, MASK_SUFFIX
from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask
from segtool.core.metrics import MaskValueError, check_values
from segtool.core.multilabel import MARKER, read_multilabel_values
from segtool.core.objects import IMAGE_MIN_SIZE
from segtool.core.regions import Regions

#: The table of per-item scores: one row an image, or a case for volumes.
PER_IMAGE_FILE = "per_image.csv"
PER_CASE_FILE = "per_case.csv"

#: (reference, prediction, spacing per axis or None for pixels)
Arrays = tuple[np.ndarray, np.ndarray, "tuple[float, ...] | None"]


@dataclass(frozen=True)
class View:
    """What the gallery draws for one scored item: 2-D masks of one plane, and its image."""

    reference: np.ndarray
    prediction: np.ndarray
    image: np.ndarray | None
    #: the error panel's title
    caption: str
    #: which plane of the item it is (a volume's slice), or None for a whole image
    where: str | None = None


@dataclass(frozen=True)
class MaskReader:
    """How one kind of mask file is paired, read and shown (the PNG label mask: `PngLabels`).

    Attributes:
        class_map: the map the scores are named by (the regions' map with regions); None
            for PNG masks without a classes.json (ids found in the masks are the names).
        regions: exclusive class ids turned into region bits, if scoring regions.
        reference_map: the references' own class map, when it orders the classes of
            `class_map` differently: references are read in it and put in `class_map`'s ids
            by name (`reference_table`).
    """

    class_map: ClassMap | None
    regions: Regions | None = None
    reference_map: ClassMap | None = None
    reference_table: np.ndarray | None = field(default=None, compare=False, repr=False)

    #: what one scored file is called
    item: ClassVar[str] = "image"
    pattern: ClassVar[str] = "*.png"
    #: lesion-wise scores leave out lesions of at most this size unless told (`EvalSpec`)
    lesion_min_size: ClassVar[float] = IMAGE_MIN_SIZE
    table_file: ClassVar[str] = PER_IMAGE_FILE
    #: keys the summary gains for this kind
    summary_fields: ClassVar[dict] = {}
    #: where the gallery looks for the images, beside the references
    images_dir: ClassVar[str] = IMAGES_DIR
    #: fewer pairs than this (without HD95) are scored in this process: workers would not pay
    min_pairs_for_workers: ClassVar[int] = 64
    #: masks whose only non-background value is the ignore value 255 are refused as 0/255
    #: binary masks made elsewhere (label masks; bit sets and volumes cannot be mistaken so)
    refuses_binary_255: ClassVar[bool] = True
    #: how the gallery says which plane it shows ("" for whole images), and its column
    view_note: ClassVar[str] = ""
    where_label: ClassVar[str | None] = None

    @property
    def multilabel(self) -> bool:
        """Whether scores are bit sets (each class its own binary problem)."""
        return self.regions is not None or bool(self.class_map and self.class_map.multilabel)

    @property
    def ignore_index(self) -> int:
        """The ignore value of the masks as scored."""
        return self.class_map.ignore_index if self.class_map else IGNORE_INDEX

    def key(self, path: Path) -> str:
        """The name a file is paired by (its stem)."""
        return path.stem

    def keep(self, path: Path) -> bool:
        """Whether a file of the folder is a mask to score (hidden files are not data)."""
        return path.suffix.lower() == MASK_SUFFIX and not path.name.startswith(".")

    def read(self, path: Path, class_map: ClassMap | None = None) -> np.ndarray:
        """One mask, its values checked against `class_map` (default: the scores' map).

        Raises:
            SegtoolError: unreadable file, a value the class map does not have.
        """
        class_map = class_map or self.class_map
        mask = read_mask(path)
        k = class_map.num_classes if class_map else None
        try:
            check_values(mask, k, class_map.ignore_index if class_map else IGNORE_INDEX)
        except MaskValueError as exc:
            raise SegtoolError(
                f"{path}: {exc}; label masks hold class ids, so check --classes (K = {k})"
            ) from exc
        return mask

    def read_reference(self, path: Path) -> np.ndarray:
        """A reference mask in the scores' class ids (matched by name from its own map)."""
        if self.reference_map is None:
            return self.read(path)
        own = self.read(path, self.reference_map)
        mapped = self.reference_table[own]
        fits = self.ignore_index <= np.iinfo(own.dtype).max
        return mapped.astype(own.dtype) if fits else mapped

    def read_pair(self, prediction: Path | None, reference: Path) -> Arrays:
        """The reference, the prediction (empty when None) and their spacing.

        Raises:
            SegtoolError: a prediction of another size, or a bad mask.
        """
        ref = self.read_reference(reference)
        if prediction is None:
            return ref, np.zeros_like(ref), None
        pred = self.read(prediction)
        if pred.shape != ref.shape:
            raise SegtoolError(
                f"{prediction}: prediction is {pred.shape[1]}x{pred.shape[0]} but its "
                f"reference {reference} is {ref.shape[1]}x{ref.shape[0]} (width x "
                f"height); predict at the reference's size"
            )
        return ref, pred, None

    def image_files(self, folder: Path | None) -> dict[str, Path]:
        """The images in `folder` by stem (the first by name where two share one)."""
        from segtool.core.images import list_images

        if folder is None or not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for path in list_images(folder):
            found.setdefault(path.stem, path)
        return found

    def view(self, prediction: Path, reference: Path, image: Path | None) -> View:
        """The whole image: the masks as they are, the image as displayed."""
        from segtool.core.images import load_rgb

        ref, pred, _ = self.read_pair(prediction, reference)
        shown = load_rgb(image) if image is not None else None
        return View(ref, pred, shown, "TP green / FP red / FN blue")


@dataclass(frozen=True)
class PngLabels(MaskReader):
    """PNG label masks: pixel = class id (`segtool.core.masks`)."""


@dataclass(frozen=True)
class PngBits(MaskReader):
    """Multi-label PNG masks (bit sets, `segtool.core.multilabel`), or exclusive PNG label
    masks turned into region bits by `regions` (a regions model's predictions are bit sets
    already: they are read as they are)."""

    refuses_binary_255: ClassVar[bool] = False

    def read(self, path: Path, class_map: ClassMap | None = None) -> np.ndarray:
        """The bit values of one mask file (`class_map`: unused, bit sets have one map).

        Raises:
            SegtoolError: unreadable file, a value or bit the class map does not have.
        """
        k = self.class_map.num_classes  # a multi-label reader always has its map
        if self.regions is None or _is_multilabel(path):
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
