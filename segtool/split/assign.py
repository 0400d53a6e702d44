"""Splitting a dataset into train, val and test: deterministic for a seed, stable as it grows.

Each stem is placed by a hash of (seed, stem) alone, so adding images later never moves an
existing image to another split, and the held-out images stay held out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE, IGNORE_INDEX, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.dataset import SPLIT_NAMES, check_dataset_folder, find_pairs, read_split
from segtool.core.errors import SegtoolError
from segtool.core.files import OutputPlan, write_json
from segtool.core.masks import binary_255_error, read_mask
from segtool.core.multilabel import read_multilabel_values
from segtool.core.parallel import ProgressFn, default_jobs, imap_jobs, with_progress
from segtool.sources.nifti import check_cases, read_label
from segtool.sources.volume_folder import (
    VolumeDataset,
    is_volume_folder,
    items_of,
    read_volume_dataset,
)
from segtool.split.amounts import (
    SMALL_SPLIT,
    check_amounts,
    check_fractions,
    counts,
    is_count,
    strata,
    take_in_order,
)
from segtool.split.folds import FoldSpec, fold_document

__all__ = ["SplitSpec", "check_fractions", "make_split", "mask_histogram", "split_dataset"]


def _unit(seed: int, stem: str) -> float:
    """A number in [0, 1) fixed by (seed, stem)."""
    digest = hashlib.sha256(f"{seed}\0{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def make_split(
    stems: list[str],
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    groups: dict[str, str] | None = None,
) -> dict:
    """Assign stems to splits.

    Two fractions and no `groups`: hash value < test -> test, < test + val -> val, else train
    (adding stems never moves an old one). A count (``val=6``) or `groups` (stem -> stratum,
    see `amounts.strata`): exactly that many, shared among the groups, each group's stems
    taken in hash order (`amounts.take_in_order`).

    Raises:
        SegtoolError: an amount that is neither a fraction nor a whole count, or amounts that
            leave nothing to train on.
    """
    check_amounts(val, test)
    split: dict = {"seed": seed, **{name: [] for name in SPLIT_NAMES}}
    if groups is None and not is_count(val) and not is_count(test):
        for stem in sorted(stems):
            u = _unit(seed, stem)
            split["test" if u < test else "val" if u < test + val else "train"].append(stem)
        return split
    val_n, test_n = counts(len(stems), val, test)
    ranked: dict[str, list[str]] = {}
    for stem in sorted(stems, key=lambda s: (_unit(seed, s), s)):
        ranked.setdefault(groups.get(stem, "") if groups else "", []).append(stem)
    return {"seed": seed, **take_in_order(ranked, val_n, test_n)}


@dataclass
class SplitResult:
    """What `split_dataset` wrote and the class balance of each split."""

    path: Path
    split: dict
    pixels: dict[str, np.ndarray]  # split name -> pixels per class id
    class_map: ClassMap | None
    notes: list[str] = field(default_factory=list)  # unpaired files left out, empty splits
    #: the names of each part the pixels count: the splits, or each fold and test
    parts: dict[str, list[str]] = field(default_factory=dict)


def mask_histogram(
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


@dataclass(frozen=True)
class SplitSpec:
    """The options of `split_dataset` (see there); `jobs` None: every core."""

    val: float = 0.15
    test: float | None = None
    seed: int = 0
    stratify: bool = False
    overwrite: bool = False
    jobs: int | None = None
    folds: FoldSpec | int | None = None


def split_dataset(
    dataset: Path,
    spec: SplitSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> SplitResult:
    """Write ``DATASET/split.json`` and count each class's pixels per split, with the
    `SplitSpec` `spec`, or one made of the `options` (``val=6, seed=3``).

    `val` and `test` are fractions (0.15) or exact counts (6); `test` defaults to 0.15, or
    to 0 with `folds`. With `stratify`, the images are
    grouped by the rarest class each holds and every group is shared out among the splits
    (`amounts.take_in_order`), so a class held by few images still reaches val and test.

    On a volume folder (``dataset.json``: Decathlon or nnU-Net v2 layout) the names split are
    cases (patients), so the slices of one case are never in two splits, and the counts are
    voxels; every case is checked first.

    With `folds` (K, or a `FoldSpec` with a ``--group`` pattern) the names are dealt into K
    folds for cross-validation (`segtool.split.folds`), `test` held out of all of them; `val`
    and `stratify` do not apply. An existing split of the same K, seed, group and test keeps
    its folds (with `overwrite`), and new names join the smallest folds.

    `on_progress` is called as ``("measure", done, total)`` while the masks (cases) are
    counted.

    Raises:
        SegtoolError: bad fractions or counts, no pairs, 0/255 masks, or an existing split
            without `overwrite`.
        TypeError: an option `SplitSpec` does not have, or options beside a `spec`.
    """
    if spec is not None and options:
        raise TypeError(f"split_dataset takes a spec or options, not both: {sorted(options)}")
    spec = spec or SplitSpec(**options)
    val, test, seed, stratify, folds = spec.val, spec.test, spec.seed, spec.stratify, spec.folds
    folds = FoldSpec(folds) if isinstance(folds, int) else folds
    test = (0.0 if folds is not None else 0.15) if test is None else test
    _check_options(val, test, stratify, folds)
    check_dataset_folder(dataset)
    path = dataset / SPLIT_FILE
    plan = OutputPlan(overwrite=spec.overwrite)
    plan.read("the images folder", dataset / IMAGES_DIR)
    plan.read("the masks folder", dataset / MASKS_DIR)
    plan.read("the class map", dataset / CLASSES_FILE)
    target = plan.write(path, folder=False, option="split.json")
    plan.check()
    jobs = spec.jobs or default_jobs()
    if is_volume_folder(dataset):
        volumes = read_volume_dataset(dataset)
        check_cases(volumes, jobs=jobs)
        cases = list(volumes.cases)
        counted = imap_jobs(partial(_voxels, volumes=volumes), cases, jobs)
        hists = list(with_progress(counted, "measure", len(cases), on_progress))
        names, class_map, lonely = [c.case for c in cases], volumes.class_map, []
    else:
        pairs, lonely = find_pairs(dataset, skip_unpaired=True)
        names = [p.stem for p in pairs]
        class_map, hists = _mask_histograms(dataset, pairs, jobs, on_progress)
    notes = [f"left out of the split: {line}" for line in lonely]
    if folds is not None:
        what = items_of(dataset)
        previous = _previous(path) if spec.overwrite else None
        split, more = fold_document(
            names,
            folds,
            seed=seed,
            hash_of=partial(_unit, seed),
            test=test,
            previous=previous,
            what=what,
        )
        parts = {f"fold {i}": stems for i, stems in enumerate(split["folds"])}
        if test:
            parts["test"] = split["test"]
        notes += more
    else:
        held = {n: (h[1:].nonzero()[0] + 1).tolist() for n, h in zip(names, hists, strict=True)}
        split = make_split(names, val, test, seed, strata(held) if stratify else None)
        parts = {part: split[part] for part in SPLIT_NAMES}
    where = {name: part for part, stems in parts.items() for name in stems}
    k = len(hists[0]) if hists else 0
    pixels = {part: np.zeros(k, dtype=np.int64) for part in parts}
    for name, hist in zip(names, hists, strict=True):
        pixels[where[name]] += hist
    if folds is None:
        notes += _balance_notes(split, pixels, class_map, (val, test), stratify)
    with plan.build():
        write_json(target.tmp, split)
    return SplitResult(path, split, pixels, class_map, notes, parts)


def _check_options(val: float, test: float, stratify: bool, folds: FoldSpec | None) -> None:
    """The amounts; with folds, no --val or --stratify (each fold is a validation set).

    Raises:
        SegtoolError: naming the option and the fix.
    """
    if folds is None:
        check_amounts(val, test)
        return
    check_amounts(0.0, test)
    if stratify:
        raise SegtoolError("--stratify shares a train/val/test split; drop it with --folds")


def _previous(path: Path) -> dict | None:
    """The split.json being replaced (None when there is none or it cannot be read: a new
    split is made)."""
    if not path.is_file():
        return None
    try:
        return read_split(path)
    except SegtoolError:
        return None


def _mask_histograms(
    dataset: Path, pairs: list, jobs: int, on_progress: ProgressFn | None = None
) -> tuple[ClassMap | None, list[np.ndarray]]:
    """The dataset's class map and each mask's pixels per class (0/255 masks refused)."""
    classes_path = dataset / CLASSES_FILE
    class_map = read_classes_json(classes_path) if classes_path.is_file() else None
    k = class_map.num_classes if class_map else 256
    ignore = class_map.ignore_index if class_map else IGNORE_INDEX
    multilabel = bool(class_map and class_map.multilabel)
    work = partial(mask_histogram, num_classes=k, ignore_index=ignore, multilabel=multilabel)
    hists, ignored = [], 0
    counted = imap_jobs(work, [p.mask for p in pairs], jobs)
    for hist, n_ignored in with_progress(counted, "measure", len(pairs), on_progress):
        hists.append(hist)
        ignored += n_ignored
    if ignored and not any(h[1:].any() for h in hists):
        error = binary_255_error(dataset / MASKS_DIR, ignore)
        if error:
            raise error
    return class_map, hists


def _balance_notes(
    split: dict,
    pixels: dict[str, np.ndarray],
    class_map: ClassMap | None,
    amounts: tuple[float, float],
    stratify: bool,
) -> list[str]:
    """Warnings: a split asked for but empty or under 5 % of the data, and a class that the
    data holds but val or test does not."""
    total = sum(len(split[part]) for part in SPLIT_NAMES)
    asked = dict(zip(("val", "test"), amounts, strict=True))
    notes = []
    for part in SPLIT_NAMES:
        n = len(split[part])
        if part != "train" and not asked[part]:
            continue
        if n == 0:
            option = part if part != "train" else "val"
            notes.append(
                f"the {part} split is empty: the split of {total} images left no image in "
                f"it; change --{option} (now {asked[option]:g}), try another --seed, or add "
                f"images"
            )
        elif n < SMALL_SPLIT * total:
            notes.append(
                f"the {part} split holds {n} of {total} images ({n / total:.1%}): its scores "
                f"will be noisy; give a count (--{part} 6) or a larger fraction"
            )
    names = class_map.names if class_map else ()
    held = sum(pixels.values())
    for part in ("val", "test"):
        missing = [c for c in range(1, len(names)) if held[c] and not pixels[part][c]]
        if split[part] and missing:
            listed = ", ".join(repr(names[c]) for c in missing)
            hint = "" if stratify else "; --stratify shares each class out among the splits"
            notes.append(f"no {part} image holds {listed}{hint}")
    return notes


def _voxels(case, volumes: VolumeDataset) -> np.ndarray:
    label = read_label(case.label, volumes.class_map, volumes.label_ignore)
    k = volumes.class_map.num_classes
    return np.bincount(label.ravel(), minlength=k)[:k]
