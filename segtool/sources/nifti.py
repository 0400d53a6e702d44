"""Reading NIfTI volumes with nibabel, and checking every case before anything is written.

Checks: image dimensions and channels as ``dataset.json`` names them, shapes and affines of
image, channels and label agree, labels whole numbers within the class map. Each failure is
one line naming the file, the value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.errors import InvalidInputError, SegtoolError
from segtool.core.finite import non_finite_problem
from segtool.sources.volume_folder import VolumeCase, VolumeDataset

#: Largest difference between two affines (millimetres, or direction cosines) still the same.
AFFINE_TOLERANCE = 1e-4


@dataclass
class Volume:
    """A decoded case: image ``(X, Y, Z, C)`` float32, label ``(X, Y, Z)`` or None."""

    case: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: object  # the nibabel header of the (first) image file
    spacing: tuple[float, float, float]


# --- reading and checking ---------------------------------------------------------------------


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad file
        raise SegtoolError(f"{path}: not a readable NIfTI file ({exc})") from exc


def _same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=0, atol=AFFINE_TOLERANCE))


def _spatial_header(case: VolumeCase, num_channels: int):
    """Open the headers of a case's image files; return (first image, spatial shape, affine).

    Raises:
        SegtoolError: wrong number of dimensions or channels, shapes or affines that differ.
    """
    imgs = [_load(p) for p in case.images]
    first = imgs[0]
    if len(case.images) == 1:
        shape = first.shape
        if num_channels > 1 and len(shape) != 4:
            raise SegtoolError(
                f"{case.images[0]}: a {len(shape)}-D image of shape {shape}, but dataset.json names "
                f"{num_channels} channels; the image must be 4-D (X x Y x Z x {num_channels})"
            )
        if len(shape) == 4 and shape[3] != num_channels:
            raise SegtoolError(
                f"{case.images[0]}: {shape[3]} channels (shape {shape}), but dataset.json names "
                f"{num_channels}; fix the image or dataset.json"
            )
        if len(shape) not in (3, 4):
            raise SegtoolError(
                f"{case.images[0]}: a {len(shape)}-D image of shape {shape}; expected 3-D or 4-D"
            )
        return first, tuple(shape[:3]), first.affine
    for path, img in zip(case.images, imgs, strict=True):
        if len(img.shape) != 3:
            raise SegtoolError(
                f"{path}: a {len(img.shape)}-D image of shape {img.shape}; each channel file must "
                f"be 3-D"
            )
        if img.shape != first.shape:
            raise SegtoolError(
                f"{path}: shape {img.shape} differs from {case.images[0]} {first.shape}; the "
                f"channels of a case must be the same grid"
            )
        if not _same_affine(img.affine, first.affine):
            raise SegtoolError(
                f"{path}: affine differs from {case.images[0]}'s; the channels of a case must be "
                f"registered to one grid (resample them)"
            )
    return first, tuple(first.shape), first.affine


def read_label(path: Path, class_map: ClassMap, label_ignore: int | None = None) -> np.ndarray:
    """A label volume as uint8 (uint16 beyond 255 classes), checked: whole numbers, class ids.

    nnU-Net's ``ignore`` label value (`label_ignore`) becomes the class map's ignore value.

    Raises:
        SegtoolError: a value that is not a whole number, or not a class id.
    """
    img = _load(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SegtoolError(
            f"{path}: a {data.ndim}-D label volume of shape {data.shape}; expected 3-D"
        )
    if not np.issubdtype(data.dtype, np.integer):
        if not np.issubdtype(data.dtype, np.floating):
            raise SegtoolError(f"{path}: label type {data.dtype} is not a number type")
        whole = np.isfinite(data) & (data == np.round(data))
        if not whole.all():
            where = tuple(int(i) for i in np.argwhere(~whole)[0])
            raise SegtoolError(
                f"{path}: label value {data[where]} at voxel {where} is not a whole number; "
                f"labels must be integer class ids (save the label volume as an integer type)"
            )
    k = class_map.num_classes
    low, high = data.min(), data.max()
    top = k if label_ignore is not None else k - 1
    if low < 0 or high > top:
        bad = low if low < 0 else high
        raise SegtoolError(
            f"{path}: label value {int(bad)} is not a class id 0..{k - 1} of dataset.json's "
            f"labels; fix the labels or dataset.json"
        )
    label = data.astype(np.uint8 if k <= 255 else np.uint16)
    if label_ignore is not None:
        label[data == label_ignore] = class_map.ignore_index
    return label


def _check_label_header(case: VolumeCase, shape: tuple, affine: np.ndarray) -> None:
    """Raise unless the case's label volume is the image's grid (shape and affine)."""
    if case.label is None:
        return
    label_img = _load(case.label)
    label_shape = tuple(label_img.shape)
    if label_shape[3:] == (1,):
        label_shape = label_shape[:3]
    if label_shape != shape:
        raise SegtoolError(
            f"{case.label}: shape {label_shape} differs from the image's {shape}; image and label "
            f"must be the same grid"
        )
    if not _same_affine(label_img.affine, affine):
        raise SegtoolError(
            f"{case.label}: affine differs from {case.images[0]}'s (largest difference "
            f"{np.abs(label_img.affine - affine).max():.3g}); image and label must share one "
            f"grid (resample the label)"
        )


def check_case(
    case: VolumeCase, num_channels: int, class_map: ClassMap, label_ignore: int | None = None
) -> str | None:
    """Check one case without keeping its data: dimensions, channels, shapes, affines, labels.

    Returns:
        None, or one line naming the file, the value and the fix.
    """
    try:
        _, shape, affine = _spatial_header(case, num_channels)
        if case.label is not None:
            _check_label_header(case, shape, affine)
            read_label(case.label, class_map, label_ignore)
    except SegtoolError as exc:
        return str(exc)
    return None


def check_cases(
    dataset: VolumeDataset, cases: list[VolumeCase] | None = None, jobs: int | None = None
) -> None:
    """Check every case of `dataset` (or `cases`) before anything is written.

    Raises:
        InvalidInputError: listing every bad case.
    """
    from functools import partial

    from segtool.core.parallel import imap_jobs

    todo = list(dataset.cases if cases is None else cases)
    work = partial(
        check_case,
        num_channels=len(dataset.channels),
        class_map=dataset.class_map,
        label_ignore=dataset.label_ignore,
    )
    problems = [p for p in imap_jobs(work, todo, jobs or 1) if p]
    if problems:
        raise InvalidInputError(f"{len(problems)} of {len(todo)} cases are invalid", problems)


def load_case(
    case: VolumeCase,
    num_channels: int,
    class_map: ClassMap | None = None,
    label_ignore: int | None = None,
) -> Volume:
    """Decode and check one case: image ``(X, Y, Z, C)`` float32 (and label, given a class map).

    Raises:
        SegtoolError: naming the file, the value and the fix (as `check_case`).
    """
    first, shape, affine = _spatial_header(case, num_channels)
    if len(case.images) == 1:
        image = _finite_image(case.images[0], first)
        if image.ndim == 3:
            image = image[..., None]
    else:
        image = np.stack([_finite_image(p, _load(p)) for p in case.images], axis=-1)
    label = None
    if case.label is not None and class_map is not None:
        _check_label_header(case, shape, affine)
        label = read_label(case.label, class_map, label_ignore)
    return Volume(
        case.case,
        image,
        label,
        np.asarray(affine, dtype=np.float64),
        first.header,
        voxel_spacing(first),
    )


def _finite_image(path: Path, img) -> np.ndarray:
    """A NIfTI image's voxels as float32, refused when any is NaN or infinite (`core.finite`).

    Raises:
        SegtoolError: naming the file, the first bad voxel and the fix.
    """
    image = np.asarray(img.get_fdata(dtype=np.float32))
    problem = non_finite_problem(image)
    if problem:
        raise SegtoolError(f"{path}: {problem}")
    return image


def voxel_spacing(img) -> tuple[float, float, float]:
    """The voxel size in millimetres along the three spatial axes, from a nibabel image."""
    return tuple(float(z) for z in img.header.get_zooms()[:3])


def read_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, float, float], np.ndarray]:
    """(spatial shape, voxel spacing in mm, affine) of a NIfTI file, from its header alone."""
    img = _load(path)
    return tuple(img.shape[:3]), voxel_spacing(img), np.asarray(img.affine, dtype=np.float64)


def read_bits(path: Path, num_foreground: int) -> np.ndarray:
    """A multi-label (region bit) volume as predicted by a model trained with --regions.

    Raises:
        SegtoolError: a value with a bit beyond the `num_foreground` classes and the ignore bit.
    """
    from segtool.core.multilabel import ignore_value, value_dtype

    data = np.asanyarray(_load(path).dataobj)
    allowed = (1 << num_foreground) - 1 | ignore_value(num_foreground)
    if not np.issubdtype(data.dtype, np.integer) or np.any(
        data.astype(np.uint64) & ~np.uint64(allowed)
    ):
        raise SegtoolError(
            f"{path}: values are not region bits of {num_foreground} regions; predict it with "
            f"the run trained with --regions"
        )
    return data.astype(value_dtype(num_foreground))
