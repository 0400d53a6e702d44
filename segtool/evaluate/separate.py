"""A separate test set (its own folder, never trained on): checks before a run scores it.

Scoring a folder that holds training images would report a number the model has memorised,
so its images are compared with the run's training images by content; and its masks are put in
the run's class ids when its own classes.json orders the classes differently.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE, MASK_SUFFIX
from segtool.core.dataset import Pair, find_pairs
from segtool.core.errors import SegtoolError
from segtool.core.files import output_folder
from segtool.core.masks import read_mask, write_mask
from segtool.core.parallel import default_jobs, imap_jobs


def file_fingerprint(path: Path) -> str:
    """A hash of a file's bytes: images are copied into datasets, never re-encoded, so one
    picture has one fingerprint wherever it lies."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(partial(fh.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_training_images(
    run: Path,
    source: Path | None,
    train_stems: set[str] | None,
    dataset: Path,
    pairs: list[Pair],
    jobs: int | None,
) -> list[str]:
    """Refuse a test folder that holds any of `run`'s training images (by fingerprint):
    `source` is the dataset it was trained on, `train_stems` its training split.

    Returns:
        Warnings: why the check could not be made, when it could not.

    Raises:
        SegtoolError: naming how many images overlap and one example of each side.
    """
    if source is None or train_stems is None or not source.is_dir():
        where = source if source is not None else "no config.json"
        return [
            f"cannot check that {dataset} holds none of the training images (training "
            f"dataset: {where}); make sure it does"
        ]
    train_pairs, _ = find_pairs(source, skip_unpaired=True)
    train_images = [p.image for p in train_pairs if p.stem in train_stems]
    jobs = jobs or default_jobs()
    known = dict(zip(imap_jobs(file_fingerprint, train_images, jobs), train_images, strict=True))
    tested = [p.image for p in pairs]
    overlap = [
        (image, known[h])
        for image, h in zip(tested, imap_jobs(file_fingerprint, tested, jobs), strict=True)
        if h in known
    ]
    if overlap:
        ours, theirs = overlap[0]
        raise SegtoolError(
            f"{dataset}: {len(overlap)} of its {len(pairs)} images are training images of {run} "
            f"(e.g. {ours} is {theirs}); a test set must never have been trained on: remove "
            f"them, or score the run's own held-out split with --split test"
        )
    return []


def _remap_one(pair: Pair, table: np.ndarray, class_map: ClassMap, out: Path) -> None:
    mask = read_mask(pair.mask)
    write_mask(out / f"{pair.stem}{MASK_SUFFIX}", table[mask], class_map, atomic=False)


def in_run_ids(
    dataset: Path,
    masks: Path,
    pairs: list[Pair],
    class_map: ClassMap,
    out: Path,
    jobs: int | None,
    *,
    overwrite: bool = False,
) -> Path:
    """The folder of reference masks in the run's class ids.

    A test folder whose classes.json names the run's classes (or some of them) in another order
    has its masks rewritten into `out`, so the scores compare like with like.

    Returns:
        `masks` when the ids already agree (or the folder has no classes.json), else `out`.

    Raises:
        SegtoolError: the folder names a class the model does not know.
    """
    path = dataset / CLASSES_FILE
    if not path.is_file():
        return masks
    theirs = read_classes_json(path)
    table, unknown = theirs.ids_in(class_map)
    if unknown:
        raise SegtoolError(
            f"{path}: class {unknown[0]!r} is not one of the model's classes "
            f"({', '.join(class_map.names)}); the model cannot be scored on it"
        )
    if table is None:
        return masks
    with output_folder(out, overwrite) as tmp:
        work = partial(_remap_one, table=table, class_map=class_map, out=tmp)
        for _ in imap_jobs(work, pairs, jobs or default_jobs()):
            pass
    return out
