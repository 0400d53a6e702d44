"""The NIfTI mask reader: label volumes scored case by case in 3-D, distances in mm.

Each case is read whole (every voxel counts once), its spacing from the reference's header,
and a prediction on another grid (shape or affine) than its reference is refused. Its view is
the most wrong axial slice: the slice with the most voxels where prediction and reference
disagree (the reference's ignore voxels left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.errors import SegtoolError
from segtool.core.objects import BRATS_MIN_SIZE
from segtool.core.volumes import slice_axis, to_slices
from segtool.evaluate.readers import PER_CASE_FILE, Arrays, MaskReader, View
from segtool.sources.nifti import read_bits, read_geometry, read_label
from segtool.sources.volume_folder import case_name, is_nifti

#: Probabilities that predict writes beside the labels (not scored).
_PROBABILITIES = "_probabilities"
#: Channel files of nnU-Net v2's image layout: the first channel is shown.
_FIRST_CHANNEL = "_0000"


@dataclass(frozen=True)
class NiftiLabels(MaskReader):
    """NIfTI label volumes (``.nii.gz``, ``.nii``) of `labels`' class ids; with `regions`,
    scored as region bits (predictions too, unless `bit_predictions`: a model trained with
    --regions predicts bits).

    Attributes:
        labels: the label volumes' own class map (the scores' map is `class_map`).
        label_ignore: nnU-Net's ignore label value in the files, if any.
        bit_predictions: the predictions already hold region bits.
    """

    labels: ClassMap | None = None
    label_ignore: int | None = None
    bit_predictions: bool = False

    item: ClassVar[str] = "case"
    pattern: ClassVar[str] = "*.nii.gz, *.nii"
    table_file: ClassVar[str] = PER_CASE_FILE
    lesion_min_size: ClassVar[float] = BRATS_MIN_SIZE  # mm³: BraTS 2023's
    summary_fields: ClassVar[dict] = {"volumes": True, "hd95_unit": "mm"}
    images_dir: ClassVar[str] = "imagesTr"
    min_pairs_for_workers: ClassVar[int] = 2
    refuses_binary_255: ClassVar[bool] = False
    view_note: ClassVar[str] = ", each on its most wrong slice"
    where_label: ClassVar[str | None] = "axial slice"

    def key(self, path: Path) -> str:
        """The case name: the file name without ``.nii.gz`` / ``.nii``."""
        return case_name(path)

    def keep(self, path: Path) -> bool:
        """NIfTI files, not the probabilities predict writes beside the labels."""
        return is_nifti(path) and not case_name(path).endswith(_PROBABILITIES)

    def read(self, path: Path, class_map: ClassMap | None = None) -> np.ndarray:
        """A label volume's class ids of `class_map` (default: the label map); nnU-Net's
        ignore label becomes the ignore value.

        Raises:
            SegtoolError: not a readable 3-D volume of whole class ids.
        """
        return read_label(path, class_map or self.labels or self.class_map, self.label_ignore)

    def read_pair(self, prediction: Path | None, reference: Path) -> Arrays:
        """The reference, the prediction (empty when None; region bits with regions) and the
        reference's voxel spacing in mm.

        Raises:
            SegtoolError: a prediction on another grid than its reference, bad values.
        """
        ref = self.read_reference(reference)
        shape, spacing, affine = read_geometry(reference)
        if prediction is None:
            pred = np.zeros_like(ref)
        else:
            pred_shape, _, pred_affine = read_geometry(prediction)
            if pred_shape != shape or not np.allclose(pred_affine, affine, rtol=0, atol=1e-4):
                raise SegtoolError(
                    f"{prediction}: not on its reference's grid ({reference}: shape {shape}); "
                    f"predict with segtool predict, which keeps the input's shape and affine"
                )
            pred = self._read_prediction(prediction)
        if self.regions is None:
            return ref, pred, spacing
        bits = self.regions.apply(ref)
        if not (self.bit_predictions and prediction is not None):
            pred = self.regions.apply(pred)
        return bits, pred.astype(bits.dtype), spacing

    def _read_prediction(self, path: Path) -> np.ndarray:
        """Class ids (segtool predict writes no ignore label), or region bits as they are."""
        if self.regions is None or not self.bit_predictions:
            return read_label(path, self.labels or self.class_map)
        return read_bits(path, self.regions.class_map.num_classes - 1)

    def image_files(self, folder: Path | None) -> dict[str, Path]:
        """The image volumes in `folder` by case (nnU-Net's layout: the first channel file)."""
        if folder is None or not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
            found.setdefault(case_name(path).removesuffix(_FIRST_CHANNEL), path)
        return found

    def view(self, prediction: Path, reference: Path, image: Path | None) -> View:
        """The most wrong axial slice (from the reference's affine), turned as viewers show it."""
        ref, pred, _ = self.read_pair(prediction, reference)
        axis = slice_axis(read_geometry(reference)[2], "axial")
        index = most_wrong_slice(ref, pred, axis, self.ignore_index)
        shown = None if image is None else np.rot90(_grey(image, axis, index)).copy()
        return View(
            np.rot90(to_slices(ref, axis)[index]).copy(),
            np.rot90(to_slices(pred, axis)[index]).copy(),
            shown,
            f"slice {index}",
            str(index),
        )


def most_wrong_slice(reference: np.ndarray, prediction: np.ndarray, axis: int, ignore: int) -> int:
    """The index along `axis` of the slice with the most disagreeing voxels."""
    wrong = (reference != prediction) & (reference != ignore)
    other = tuple(a for a in range(reference.ndim) if a != axis)
    return int(np.argmax(wrong.sum(axis=other)))


def _grey(image_path: Path, axis: int, index: int) -> np.ndarray:
    """The first channel's slice, scaled to 0..255 between its 1st and 99th percentiles (of
    its finite voxels: a picture only, so NaN or infinite voxels are shown black)."""
    import nibabel as nib

    data = nib.load(str(image_path)).dataobj
    volume = np.asarray(data[..., 0] if len(data.shape) == 4 else data, dtype=np.float32)
    plane = np.take(volume, index, axis=axis)
    finite = np.isfinite(plane)
    low, high = np.percentile(plane[finite], [1, 99]) if finite.any() else (0.0, 0.0)
    scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    return (np.clip(np.where(finite, scaled, 0), 0, 1) * 255).astype(np.uint8)
