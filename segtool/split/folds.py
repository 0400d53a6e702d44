"""K-fold cross-validation splits: groups of images (or cases) dealt into K balanced folds that
stay put as the dataset grows.

The rule (`FOLD_RULE`, also written into ``split.json``): every name belongs to a group (its
own, a volume folder's case, or what ``--group PATTERN`` finds in it), and a group is placed
whole, so one patient's images never straddle two folds. ``--test`` holds groups out first:
a fraction takes the groups whose hash of (seed, group) is below it (as ``segtool split``
does), a count the groups with the lowest hashes. The other groups are dealt largest first
(ties in hash order), each into the fold holding the fewest images so far (then the fewest
groups, then the lowest number): folds of single images differ by at most one image.

No rule of one dataset alone can be both balanced and stable (two names that hash to the same
fold are already an unbalanced dataset of two), so stability comes from the split being
replaced: ``segtool split --folds K --overwrite`` reads the ``split.json`` it replaces and,
when that one was made with the same K, seed, ``--group`` and ``--test``, keeps every group
where it was (test or its fold) and deals only the new groups, into the smallest folds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from segtool.core.errors import SegtoolError
from segtool.split.amounts import is_count

#: The rule, as split.json states it.
FOLD_RULE = (
    "groups held out for test by the hash of (seed, group); the rest dealt largest first, "
    "ties in hash order, each into the fold with the fewest images (then groups, then the "
    "lowest number); a re-split of the same K, seed, group and test keeps every old group "
    "where it was and deals only new groups"
)
#: The fewest folds a cross-validation has.
MIN_FOLDS = 2


def group_names(names: Sequence[str], pattern: str | None, unit: str = "images") -> dict[str, str]:
    """Each name's group: the first capture group of `pattern`'s first match in it, or the
    whole match when the pattern has no group; each name its own group without a pattern.

    Raises:
        SegtoolError: a pattern that does not compile, or names it does not match.
    """
    if pattern is None:
        return {name: name for name in names}
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise SegtoolError(
            f"--group '{pattern}' is not a regular expression ({exc}); e.g. --group "
            f"'^(patient\\d+)_'"
        ) from None
    groups, unmatched = {}, []
    for name in names:
        found = regex.search(name)
        if found is None or not (found.group(1) if regex.groups else found.group(0)):
            unmatched.append(name)
        else:
            groups[name] = found.group(1) if regex.groups else found.group(0)
    if unmatched:
        matched = len(names) - len(unmatched)
        raise SegtoolError(
            f"--group '{pattern}' matches {matched or 'none'} of the names of the {len(names)} "
            f"{unit} (not e.g. {unmatched[0]!r}); give a pattern whose first group names the "
            f"group in every name, e.g. '^([^_]+)_'"
        )
    return groups


def _held_out(
    ranked: list[str], test: float, unit: Mapping[str, float], kept: set[str], placed: set[str]
) -> set[str]:
    """The test groups: the old ones, then by hash (`unit`: the hash of each group)."""
    if not is_count(test):
        return kept | {g for g in ranked if g not in placed and unit[g] < test}
    fresh = [g for g in ranked if g not in placed]
    return kept | set(fresh[: max(int(test) - len(kept), 0)])


def make_folds(
    groups: Mapping[str, str],
    k: int,
    *,
    unit: Mapping[str, float],
    test: float = 0.0,
    previous: Mapping[str, int | str] | None = None,
    what: str = "images",
) -> tuple[list[list[str]], list[str]]:
    """Deal the names into `k` folds by their groups (module docstring), holding out `test`.

    Args:
        groups: name -> group.
        k: the number of folds (2 or more).
        unit: group -> its hash in [0, 1) (the seed is in it).
        test: a fraction of the groups (by hash), or a count of groups, held out of every fold.
        previous: group -> its fold number or ``"test"`` in the split being replaced.
        what: what the names are, for messages (images, cases).

    Returns:
        (the folds' names, each sorted; the test names, sorted).

    Raises:
        SegtoolError: fewer than 2 folds, or fewer groups than folds.
    """
    if k < MIN_FOLDS:
        raise SegtoolError(f"--folds {k}: a cross-validation needs at least {MIN_FOLDS} folds")
    previous = dict(previous or {})
    members: dict[str, list[str]] = {}
    for name in sorted(groups):
        members.setdefault(groups[name], []).append(name)
    ranked = sorted(members, key=lambda g: (unit[g], g))
    kept_test = {g for g in ranked if previous.get(g) == "test"}
    testing = _held_out(ranked, test, unit, kept_test, set(previous) & set(members))
    dealt = [g for g in ranked if g not in testing]
    noun = "groups" if any(len(m) > 1 for m in members.values()) else what
    if len(dealt) < k:
        held = f" after --test holds out {len(testing)}" if testing else ""
        raise SegtoolError(
            f"--folds {k}: the dataset has {len(dealt)} {noun} to share{held}, too few for "
            f"{k} folds (each needs one); give --folds {max(len(dealt), MIN_FOLDS)} or less, "
            f"or add {what}"
        )
    folds: list[list[str]] = [[] for _ in range(k)]
    for g in dealt:
        if isinstance(previous.get(g), int) and previous[g] < k:
            folds[previous[g]].append(g)
    for g in sorted(
        (g for g in dealt if not isinstance(previous.get(g), int)),
        key=lambda g: (-len(members[g]), unit[g], g),
    ):
        size = [(sum(len(members[h]) for h in f), len(f), i) for i, f in enumerate(folds)]
        folds[min(size)[2]].append(g)
    empty = [i for i, f in enumerate(folds) if not f]
    if empty:
        raise SegtoolError(
            f"fold {empty[0]} of the split.json being replaced has no {noun} left; give "
            f"another --seed for a new split"
        )
    names = [sorted(n for g in fold for n in members[g]) for fold in folds]
    return names, sorted(n for g in testing for n in members[g])


def previous_places(
    doc: Mapping | None, groups: Mapping[str, str], settings: Mapping
) -> dict[str, int | str]:
    """Where each group was in the split being replaced (a fold number or ``"test"``), when
    that split was made with the same `settings` (k, seed, group, test) and places every group
    whole; else nothing (a new split)."""
    if not doc or doc.get("folds") is None:
        return {}
    if any(doc.get(key) != value for key, value in settings.items() if key != "k"):
        return {}
    if len(doc["folds"]) != settings["k"]:
        return {}
    places: dict[str, int | str] = {}
    where = [(i, stems) for i, stems in enumerate(doc["folds"])] + [("test", doc["test"])]
    for place, stems in where:
        for stem in stems:
            group = groups.get(stem)
            if group is None:  # an image no longer in the dataset
                continue
            if places.setdefault(group, place) != place:
                return {}  # a group the old split straddled: not this rule's split
    return places


def fold_split(doc: Mapping, fold: int, source: str) -> dict:
    """The split a run trains with on fold `fold` of a folds split: the other folds train,
    fold `fold` validates, the test split stays held out; ``"fold"`` records which.

    Raises:
        SegtoolError: a split without folds, or `fold` out of range.
    """
    folds = doc.get("folds")
    if folds is None:
        raise SegtoolError(
            f"--fold {fold}: {source} has no folds; run segtool split DATASET --folds K "
            f"(--overwrite) first"
        )
    if not 0 <= fold < len(folds):
        raise SegtoolError(
            f"--fold {fold} is out of range: {source} has {len(folds)} folds, numbered 0 to "
            f"{len(folds) - 1}"
        )
    train = sorted(s for i, stems in enumerate(folds) if i != fold for s in stems)
    return {**doc, "train": train, "val": sorted(folds[fold]), "fold": fold}


@dataclass(frozen=True)
class FoldSpec:
    """``segtool split --folds K [--group PATTERN]``: how many folds, and what groups names."""

    k: int
    group: str | None = None


def fold_document(
    names: Sequence[str],
    spec: FoldSpec,
    *,
    seed: int,
    hash_of: Callable[[str], float],
    test: float = 0.0,
    previous: Mapping | None = None,
    what: str = "images",
) -> tuple[dict, list[str]]:
    """The ``split.json`` of a K-fold split (docs/architecture.md) and notes for the user.

    ``train`` and ``val`` are fold 0's (``"fold": 0``), so a reader that knows no folds trains
    fold 0; ``segtool train --fold k`` takes fold k (`fold_split`).

    Args:
        names: the images' stems, or a volume folder's cases.
        spec: the folds and the ``--group`` pattern (None: each name its own group).
        seed: recorded; `hash_of` holds it.
        hash_of: a group -> its hash in [0, 1).
        test: held out of every fold: a fraction or a count of groups; 0: none.
        previous: the split.json being replaced, or None.
        what: what the names are (images, cases), for messages.

    Raises:
        SegtoolError: as `group_names` and `make_folds`.
    """
    k, group = spec.k, spec.group
    groups = group_names(names, group, what)
    unit = {g: hash_of(g) for g in set(groups.values())}
    settings = {"k": k, "seed": seed, "group": group, "test_amount": test}
    places = previous_places(previous, groups, settings)
    folds, held = make_folds(groups, k, unit=unit, test=test, previous=places, what=what)
    notes = []
    if places:
        kept = sum(1 for n in names if groups[n] in places)
        notes.append(
            f"kept the folds of the {kept} {what} already in the split.json being replaced; "
            f"dealt {len(names) - kept} new one(s) into the smallest folds"
        )
    doc = {
        "seed": seed,
        "train": sorted(n for fold in folds[1:] for n in fold),
        "val": folds[0],
        "test": held,
        "fold": 0,
        "folds": folds,
        "group": group,
        "test_amount": test,
        "fold_rule": FOLD_RULE,
    }
    return doc, notes
