"""Tiny synthetic MRI folders for the volume tests: 32 x 32 x 8 x 2 cases, anisotropic voxels,
a tumour blob (class 1, with a core of class 2) brighter in one channel and darker in the
other, inside a non-zero "brain" on a zero background."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (32, 32, 8)
SPACING = (0.9, 1.1, 3.0)
CHANNELS = ("FLAIR", "T1")
LABELS = ("background", "edema", "core")


def affine(spacing=SPACING, origin=(-14.0, 20.0, 5.0)) -> np.ndarray:
    """A RAS affine with the given voxel size."""
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def make_case(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(image X x Y x Z x 2 float32, label X x Y x Z uint8) for one synthetic case."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape)
    brain = ((x - 16) / 13) ** 2 + ((y - 16) / 13) ** 2 < 1
    cx, cy, cz = rng.integers(10, 22), rng.integers(10, 22), rng.integers(2, 6)
    r = rng.uniform(3, 5)
    d = ((x - cx) / r) ** 2 + ((y - cy) / r) ** 2 + ((z - cz) / (r / 3)) ** 2
    label = np.zeros(shape, np.uint8)
    label[(d < 1) & brain] = 1
    label[(d < 0.3) & brain] = 2
    scale = rng.uniform(0.5, 2.0)  # each volume its own intensity scale
    flair = rng.normal(100, 10, shape) * scale
    t1 = rng.normal(300, 30, shape) * scale
    flair[label > 0] += 80 * scale
    t1[label > 0] -= 150 * scale
    image = np.stack([flair, t1], axis=-1).astype(np.float32)
    image[~brain] = 0
    return image, label


def save(path: Path, data: np.ndarray, aff: np.ndarray | None = None) -> Path:
    """Write a NIfTI file (compressed by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine() if aff is None else aff)
    nib.save(img, str(path))
    return path


def make_msd(root: Path, n: int = 6, test: int = 1) -> Path:
    """A Decathlon-style folder: 4-D images, labels, dataset.json with modality and labels."""
    cases = [f"BRATS_{i:03d}" for i in range(n)]
    for i, case in enumerate(cases):
        image, label = make_case(i)
        save(root / "imagesTr" / f"{case}.nii.gz", image)
        save(root / "labelsTr" / f"{case}.nii.gz", label)
    for j in range(test):
        image, _ = make_case(100 + j)
        save(root / "imagesTs" / f"BRATS_{500 + j:03d}.nii.gz", image)
    doc = {
        "name": "tiny",
        "modality": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": {str(i): name for i, name in enumerate(LABELS)},
        "numTraining": n,
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases
        ],
        "test": [f"./imagesTs/BRATS_{500 + j:03d}.nii.gz" for j in range(test)],
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def make_nnunet(root: Path, n: int = 4) -> Path:
    """An nnU-Net v2 folder: one 3-D file per channel, dataset.json with channel_names."""
    for i in range(n):
        image, label = make_case(i)
        for c in range(image.shape[-1]):
            save(root / "imagesTr" / f"case{i:02d}_{c:04d}.nii.gz", image[..., c])
        save(root / "labelsTr" / f"case{i:02d}.nii.gz", label)
    doc = {
        "channel_names": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": {name: i for i, name in enumerate(LABELS)},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root
