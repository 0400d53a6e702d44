"""Volumes as training slices: the slice cache (standardisation and the slice axis, which
predict and evaluate use too, are in `segtool.core.volumes`).

Decoding a compressed NIfTI volume costs far more than a training step, so each volume is
decoded once, standardised and written as memory-mapped arrays of slices::

    CACHE/<case>-<fingerprint>/image.npy   (S, C, H, W) float16, standardised
    CACHE/<case>-<fingerprint>/label.npy   (S, H, W) uint8 (uint16 beyond 255 classes)
    CACHE/<case>-<fingerprint>/meta.json   case, axis, shape, spacing, statistics, fg slices

The fingerprint hashes the case's file names, sizes and modification times, the slice axis
and the cache format, so a changed file or axis makes a new entry and an unchanged one is
reused (by later runs too, when they share the cache folder).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path, write_json
from segtool.core.volumes import AXES, from_slices, slice_axis, standardize, to_slices
from segtool.sources.nifti import Volume, load_case
from segtool.sources.volume_folder import VolumeCase, VolumeDataset

#: Bumped when the cache layout or the standardisation changes (old entries are not reused).
CACHE_VERSION = 1


def case_fingerprint(case: VolumeCase, axis: str) -> str:
    """A hash of the case's files (names, sizes, modification times), the axis, the format."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{axis}\n".encode())
    for path in (*case.images, *([case.label] if case.label else [])):
        st = path.stat()
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class CachedVolume:
    """One case's slices, memory-mapped from the cache."""

    case: str
    image: np.ndarray  # (S, C, H, W) float16
    label: np.ndarray  # (S, H, W)
    meta: dict

    @property
    def fg_slices(self) -> list[int]:
        """Slices that hold a foreground voxel."""
        return self.meta["fg_slices"]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the volume's axes (X, Y, Z)."""
        return tuple(self.meta["spacing"])

    def label_volume(self) -> np.ndarray:
        """The label in the volume's own axes ``(X, Y, Z)``."""
        return from_slices(np.asarray(self.label), self.meta["axis_index"])


def _write_entry(
    folder: Path, volume: Volume, label: np.ndarray, axis: str, fingerprint: str, ignore: int
) -> None:
    axis_index = slice_axis(volume.affine, axis)
    image, stats = standardize(volume.image)
    image_slices = to_slices(image, axis_index).astype(np.float16)
    label_slices = np.ascontiguousarray(to_slices(label, axis_index))
    fg = label_slices.reshape(len(label_slices), -1)
    fg_slices = np.flatnonzero(((fg != 0) & (fg != ignore)).any(axis=1))
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("image.npy", image_slices), ("label.npy", label_slices)):
        with atomic_path(folder / name) as tmp, tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(array))
    # meta.json last: an entry without it is incomplete and is rebuilt.
    write_json(
        folder / "meta.json",
        {
            "case": volume.case,
            "fingerprint": fingerprint,
            "axis": axis,
            "axis_index": axis_index,
            "shape": list(label.shape),
            "spacing": list(volume.spacing),
            "affine": np.asarray(volume.affine).tolist(),
            "statistics": stats,
            "fg_slices": [int(s) for s in fg_slices],
        },
    )


def _open_entry(folder: Path) -> CachedVolume:
    meta = json.loads((folder / "meta.json").read_text())
    return CachedVolume(
        meta["case"],
        np.load(folder / "image.npy", mmap_mode="r"),
        np.load(folder / "label.npy", mmap_mode="r"),
        meta,
    )


def build_cache(
    dataset: VolumeDataset,
    cases: list[VolumeCase],
    cache_dir: Path,
    axis: str = "axial",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[CachedVolume]:
    """Decode each case once into `cache_dir` (reusing entries whose fingerprint matches).

    Args:
        dataset: the volume folder (channels, class map).
        cases: labelled cases to cache.
        cache_dir: where entries live.
        axis: slice axis name (axial, coronal, sagittal).
        on_progress: called as ``(phase, done, total)``.

    Returns:
        the cached volumes, in the order of `cases`.

    Raises:
        SegtoolError: a case fails its checks.
    """
    if axis not in AXES:
        raise SegtoolError(f"--axis {axis!r} is not one of {', '.join(AXES)}")
    out = []
    for i, case in enumerate(cases, 1):
        fingerprint = case_fingerprint(case, axis)
        folder = cache_dir / f"{case.case}-{fingerprint}"
        if not (folder / "meta.json").is_file():
            volume = load_case(case, len(dataset.channels), dataset.class_map, dataset.label_ignore)
            if volume.label is None:
                raise SegtoolError(f"{case.images[0]}: case {case.case!r} has no label volume")
            _write_entry(
                folder, volume, volume.label, axis, fingerprint, dataset.class_map.ignore_index
            )
        out.append(_open_entry(folder))
        if on_progress:
            on_progress("cache", i, len(cases))
    return out
