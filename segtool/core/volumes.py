"""Volumes as stacks of 2-D slices: the slice axis, per-volume standardisation.

Training cuts volumes into slices, predict cuts new volumes the same way and stacks the labels
back, and evaluate's gallery shows one slice: all three take the rule from here.
"""

from __future__ import annotations

import numpy as np

from segtool.core.errors import SegtoolError

#: Slice axes by name, as anatomical directions: the voxel axis that runs along them.
AXES = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}
#: The standardisation rule, written into the run so predict applies the same one.
STANDARDIZATION = "per-volume per-channel z-score over non-zero voxels (zeros stay 0)"


def standardize(image: np.ndarray) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Per channel, to mean 0 and standard deviation 1 over the non-zero voxels.

    The rule of MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)`` and nnU-Net's
    z-score with a brain mask: zero voxels (outside the brain) stay 0; a channel whose
    non-zero voxels are constant is only shifted (std taken as 1); an all-zero channel is
    left as it is. Statistics are computed in float64.

    Args:
        image: ``(X, Y, Z, C)`` (any number of leading axes, channels last).

    Returns:
        (float32 standardised image, per channel ``{"mean", "std", "voxels"}``).
    """
    out = np.zeros(image.shape, dtype=np.float32)
    stats = []
    for c in range(image.shape[-1]):
        channel = image[..., c]
        inside = channel != 0
        values = channel[inside].astype(np.float64)
        mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size else 1.0
        std = std if std > 0 else 1.0
        out[..., c][inside] = ((values - mean) / std).astype(np.float32)
        stats.append({"mean": mean, "std": std, "voxels": int(values.size)})
    return out, stats


def slice_axis(affine: np.ndarray, axis: str) -> int:
    """The voxel axis (0, 1 or 2) that runs along `axis` (axial, coronal, sagittal), read from
    the affine's orientation, so files stored in any voxel order slice the same way."""
    import nibabel as nib

    if axis not in AXES:
        raise SegtoolError(f"--axis {axis!r} is not one of {', '.join(AXES)}")
    codes = nib.aff2axcodes(affine)
    for i, code in enumerate(codes):
        if code in AXES[axis]:
            return i
    raise SegtoolError(f"the affine's orientation {codes} has no {axis} axis")


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """``(X, Y, Z[, C])`` -> ``(S, [C,] H, W)`` slices along voxel axis `axis`."""
    moved = np.moveaxis(volume, axis, 0)
    return np.moveaxis(moved, -1, 1) if volume.ndim == 4 else moved


def from_slices(slices: np.ndarray, axis: int) -> np.ndarray:
    """The inverse of `to_slices` for a label stack ``(S, H, W)`` -> ``(X, Y, Z)``."""
    return np.moveaxis(slices, 0, axis)
