"""Which classes each split holds, checked before the first step: a model is never chosen on
a validation split where nothing can be scored, and a class the model cannot learn is named.

The best epoch is the one with the highest validation Dice. Dice of a class is defined where
the validation references hold it (or a prediction does, and then it is 0), so a validation
split without any scored class would keep whatever epoch came first, on nothing.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.dataset import Pair
from segtool.core.errors import SegtoolError
from segtool.core.parallel import imap_jobs, jobs_for
from segtool.split.assign import mask_histogram


def _held(masks: list[Path], class_map: ClassMap, jobs: int) -> np.ndarray:
    """How many of `masks` hold each class id (multi-label: each bit)."""
    k = class_map.num_classes
    work = partial(
        mask_histogram,
        num_classes=k,
        ignore_index=class_map.ignore_index,
        multilabel=class_map.multilabel,
    )
    held = np.zeros(k, dtype=np.int64)
    for hist, _ignored in imap_jobs(work, masks, jobs):
        held += hist[:k] > 0
    return held


def check_presence(
    train: list[Pair], val: list[Pair], class_map: ClassMap, jobs: int | None = None
) -> list[str]:
    """Refuse a validation split on which no class can be scored; name the classes the
    training split lacks.

    Args:
        train: the training pairs.
        val: the validation pairs.
        class_map: the classes the masks hold (not `--regions`' map).
        jobs: worker processes for reading the masks.

    Returns:
        warnings, one line each: classes no training image holds (the model cannot learn
        them), and classes no image of either split holds.

    Raises:
        SegtoolError: no validation mask holds a scored class.
    """
    jobs = jobs or jobs_for(len(train) + len(val))
    in_train = _held([p.mask for p in train], class_map, jobs)
    in_val = _held([p.mask for p in val], class_map, jobs)
    first = 0 if class_map.background_scored else 1
    scored = range(first, class_map.num_classes)
    names = class_map.names
    if not any(in_val[c] for c in scored):
        raise SegtoolError(
            f"none of the {len(val)} validation images holds a class that is scored "
            f"({', '.join(names[c] for c in scored)}): the best epoch would be chosen on "
            f"nothing; give val images with foreground (segtool split --stratify, or another "
            f"--seed), or mark id 0 as a class (background_scored in classes.json)"
        )
    notes = []
    nowhere = [names[c] for c in scored if not in_train[c] and not in_val[c]]
    only_val = [names[c] for c in scored if not in_train[c] and in_val[c]]
    if only_val:
        notes.append(
            f"no training image holds {', '.join(only_val)} (only validation images do): "
            f"the model cannot learn it; segtool split --stratify shares classes out"
        )
    if nowhere:
        notes.append(
            f"no training or validation image holds {', '.join(nowhere)}: the model cannot "
            f"learn it and validation cannot score it"
        )
    return notes
