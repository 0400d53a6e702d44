"""Splitting a dataset into train, val and test: deterministic for a seed, stable as it grows.

Each stem is placed by a hash of (seed, stem) alone, so adding images later never moves an
existing image to another split, and the held-out images stay held out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE, IGNORE_INDEX, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.dataset import SPLIT_NAMES, find_pairs
from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.masks import binary_255_error, read_mask
from segtool.core.multilabel import read_multilabel_values
from segtool.core.parallel import default_jobs, imap_jobs
from segtool.sources.nifti import check_cases, read_label
from segtool.sources.volume_folder import VolumeDataset, is_volume_folder, read_volume_dataset


def _unit(seed: int, stem: str) -> float:
    """A number in [0, 1) fixed by (seed, stem)."""
    digest = hashlib.sha256(f"{seed}\0{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fractions(val: float, test: float) -> None:
    """Raise unless 0 <= val, 0 <= test and val + test < 1 (NaN and infinity are refused)."""
    if not (math.isfinite(val) and math.isfinite(test)) or val < 0 or test < 0 or val + test >= 1:
        raise SegtoolError(
            f"--val {val} and --test {test} must be >= 0 and sum to less than 1 "
            f"(the rest is the training set); e.g. --val 0.15 --test 0.15"
        )


def make_split(stems: list[str], val: float = 0.15, test: float = 0.15, seed: int = 0) -> dict:
    """Assign stems to splits: hash value < test -> test, < test + val -> val, else train."""
    check_fractions(val, test)
    split: dict = {"seed": seed, **{name: [] for name in SPLIT_NAMES}}
    for stem in sorted(stems):
        u = _unit(seed, stem)
        split["test" if u < test else "val" if u < test + val else "train"].append(stem)
    return split


@dataclass
class SplitResult:
    """What `split_dataset` wrote and the class balance of each split."""

    path: Path
    split: dict
    pixels: dict[str, np.ndarray]  # split name -> pixels per class id
    class_map: ClassMap | None
    notes: list[str] = field(default_factory=list)  # unpaired files left out, empty splits


def _histogram(
    path: Path, num_classes: int, ignore_index: int, multilabel: bool = False
) -> tuple[np.ndarray, int]:
    """(pixels per class id, pixels holding the ignore value) of one mask; of a multi-label
    mask, the pixels holding each class (id 0: holding none), so overlapping pixels count for
    each of their classes."""
    if not multilabel:
        mask = read_mask(path)
        ignored = int(np.count_nonzero(mask == ignore_index))
        return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes], ignored
    values = read_multilabel_values(path, num_classes)
    kind = values.dtype.type
    counts = [np.count_nonzero(values & kind(1 << bit)) for bit in range(num_classes - 1)]
    none = np.count_nonzero((values & kind((1 << (num_classes - 1)) - 1)) == 0)
    return np.array([none, *counts], dtype=np.int64), 0


def split_dataset(
    dataset: Path,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
    jobs: int | None = None,
) -> SplitResult:
    """Write ``DATASET/split.json`` and count each class's pixels per split.

    On a volume folder (``dataset.json``: Decathlon or nnU-Net v2 layout) the names split are
    cases (patients), so the slices of one case are never in two splits, and the counts are
    voxels; every case is checked first.

    Raises:
        SegtoolError: bad fractions, no pairs, 0/255 masks, or an existing split without
            `overwrite`.
    """
    check_fractions(val, test)
    path = dataset / SPLIT_FILE
    plan = OutputPlan(overwrite=overwrite)
    plan.read("the images folder", dataset / IMAGES_DIR)
    plan.read("the masks folder", dataset / MASKS_DIR)
    plan.read("the class map", dataset / CLASSES_FILE)
    target = plan.write(path, folder=False, option="split.json")
    plan.check()
    if is_volume_folder(dataset):
        return _split_volumes(read_volume_dataset(dataset), path, val, test, seed, jobs)
    pairs, lonely = find_pairs(dataset, skip_unpaired=True)
    split = make_split([p.stem for p in pairs], val, test, seed)
    classes_path = dataset / CLASSES_FILE
    class_map = read_classes_json(classes_path) if classes_path.is_file() else None
    k = class_map.num_classes if class_map else 256
    ignore = class_map.ignore_index if class_map else IGNORE_INDEX
    where = {stem: name for name in SPLIT_NAMES for stem in split[name]}
    pixels = {name: np.zeros(k, dtype=np.int64) for name in SPLIT_NAMES}
    ignored = 0
    masks = [p.mask for p in pairs]
    multilabel = bool(class_map and class_map.multilabel)
    work = partial(_histogram, num_classes=k, ignore_index=ignore, multilabel=multilabel)
    for pair, (hist, n_ignored) in zip(
        pairs, imap_jobs(work, masks, jobs or default_jobs()), strict=True
    ):
        pixels[where[pair.stem]] += hist
        ignored += n_ignored
    foreground = sum(int(p[1:].sum()) for p in pixels.values())
    if foreground == 0 and ignored:
        error = binary_255_error(dataset / MASKS_DIR, ignore)
        if error:
            raise error
    notes = [f"left out of the split: {line}" for line in lonely]
    fractions = {"val": val, "test": test, "train": 1 - val - test}
    for name in SPLIT_NAMES:
        if fractions[name] > 0 and not split[name]:
            notes.append(
                f"the {name} split is empty: the hash split of {len(pairs)} images left no "
                f"image in it; raise --{name if name != 'train' else 'val'} (now "
                f"{fractions[name]:g}), try another --seed, or add images"
            )
    with plan.build():
        write_json(target.tmp, split)
    return SplitResult(path, split, pixels, class_map, notes)


def _voxels(case, volumes: VolumeDataset) -> np.ndarray:
    label = read_label(case.label, volumes.class_map, volumes.label_ignore)
    k = volumes.class_map.num_classes
    return np.bincount(label.ravel(), minlength=k)[:k]


def _split_volumes(
    volumes: VolumeDataset, path: Path, val: float, test: float, seed: int, jobs: int | None
) -> SplitResult:
    """Split the cases of a volume folder with `make_split`; count voxels per class."""
    jobs = jobs or default_jobs()
    check_cases(volumes, jobs=jobs)
    cases = list(volumes.cases)
    split = make_split([c.case for c in cases], val, test, seed)
    where = {case: name for name in SPLIT_NAMES for case in split[name]}
    k = volumes.class_map.num_classes
    voxels = {name: np.zeros(k, dtype=np.int64) for name in SPLIT_NAMES}
    counts = imap_jobs(partial(_voxels, volumes=volumes), cases, jobs)
    for case, hist in zip(cases, counts, strict=True):
        voxels[where[case.case]] += hist
    write_json(path, split)
    return SplitResult(path, split, voxels, volumes.class_map)
