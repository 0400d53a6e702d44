"""How many images each split gets: fractions or exact counts, and strata by class presence.

`--val 0.15` is a share of the images, `--val 6` exactly six. Fractions without strata keep the
hash thresholds of `assign.make_split` (stable as the dataset grows); counts and strata rank
each group's images by the same hash and take the first ones, so a seed still fixes the split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from segtool.core.errors import SegtoolError

#: A split holding less than this share of the data gets a warning.
SMALL_SPLIT = 0.05
#: The stratum of an image that holds no foreground class.
NO_CLASS = ""


def is_count(amount: float) -> bool:
    """True when `amount` is a number of images (1 or more) rather than a share."""
    return amount >= 1


def check_fractions(val: float, test: float) -> None:
    """Raise unless 0 <= val, 0 <= test and val + test < 1 (NaN and infinity are refused)."""
    if not (math.isfinite(val) and math.isfinite(test)) or val < 0 or test < 0 or val + test >= 1:
        raise SegtoolError(
            f"--val {val} and --test {test} must be >= 0 and sum to less than 1 "
            f"(the rest is the training set); e.g. --val 0.15 --test 0.15"
        )


def check_amounts(val: float, test: float) -> None:
    """Raise unless each of `val`, `test` is a fraction in [0, 1) or a whole count >= 1, and two
    fractions leave a training share.

    Raises:
        SegtoolError: naming the option, its value and the two forms it takes.
    """
    for name, amount in (("val", val), ("test", test)):
        if is_count(amount) and (not math.isfinite(amount) or amount != int(amount)):
            raise SegtoolError(
                f"--{name} {amount:g}: give a fraction below 1 (e.g. 0.15) or a whole number "
                f"of images (e.g. 6)"
            )
    fractions = [a if not is_count(a) else 0.0 for a in (val, test)]
    check_fractions(*fractions)


def counts(total: int, val: float, test: float) -> tuple[int, int]:
    """The exact (val, test) counts for `total` images: a count as given, a fraction rounded
    half up.

    Raises:
        SegtoolError: the two leave no image for training.
    """
    val_n, test_n = (int(a) if is_count(a) else math.floor(a * total + 0.5) for a in (val, test))
    if val_n + test_n >= total:
        raise SegtoolError(
            f"--val {val:g} and --test {test:g} take {val_n + test_n} of {total} images and "
            f"leave none to train on; give smaller counts or fractions"
        )
    return val_n, test_n


def apportion(amount: int, weights: Sequence[int], room: Sequence[int] | None = None) -> list[int]:
    """Share `amount` among groups in proportion to `weights` (largest remainder, ties to the
    earlier group), never giving a group more than its `room` (default: its weight).

    >>> apportion(3, [9, 6, 3])
    [2, 1, 0]
    """
    room = list(weights) if room is None else list(room)
    if amount > sum(room):
        raise ValueError(f"cannot place {amount} in {sum(room)}")
    total = sum(weights)
    exact = [amount * w / total if total else 0.0 for w in weights]
    shares = [min(math.floor(x), r) for x, r in zip(exact, room, strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    left = amount - sum(shares)
    while left:  # one more for the largest remainders that still have room
        for i in order:
            if left and shares[i] < room[i]:
                shares[i] += 1
                left -= 1
    return shares


def _share(amount: int, sizes: Sequence[int], room: Sequence[int], keep: int) -> list[int]:
    """`amount` shared out in proportion to `sizes` within `room`; then each group left without
    one that could spare one (keeping more than `keep`) gets one, rarest group first, from the
    group holding the most (while that one keeps at least one)."""
    shares = apportion(amount, sizes, room)
    for i in sorted(range(len(sizes)), key=lambda i: (sizes[i], i)):
        if shares[i] or room[i] <= keep:
            continue
        donor = max(range(len(sizes)), key=lambda j: (shares[j], sizes[j], -j))
        if shares[donor] < 2:
            break
        shares[donor] -= 1
        shares[i] = 1
    return shares


def strata(presence: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """Each name's stratum: the rarest class it holds (the one fewest names hold), so that the
    images of a rare class are shared out among the splits as a group of their own.

    Args:
        presence: name -> the foreground class ids it holds (empty: background only).
    """
    holders: dict[int, int] = {}
    for held in presence.values():
        for c in held:
            holders[c] = holders.get(c, 0) + 1
    return {
        name: str(min(held, key=lambda c: (holders[c], c))) if held else NO_CLASS
        for name, held in presence.items()
    }


def take_in_order(ranked: Mapping[str, list[str]], val_n: int, test_n: int) -> dict[str, list[str]]:
    """Assign the first names of each group (already in hash order) to test, the next to val,
    the rest to train.

    Every group that can spare one gives test one name while it keeps one to train on, and val
    one while it keeps one for test and one to train on (the rarest groups first, as long as
    the counts last); the rest of `test_n` and `val_n` is shared in proportion to the groups'
    sizes (largest remainder). So a class that only a few images hold reaches every split.
    """
    groups = sorted(ranked)
    sizes = [len(ranked[g]) for g in groups]
    test_share = _share(test_n, sizes, sizes, keep=1)
    room = [s - t for s, t in zip(sizes, test_share, strict=True)]
    val_share = _share(val_n, sizes, room, keep=1)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for g, t, v in zip(groups, test_share, val_share, strict=True):
        names = ranked[g]
        out["test"] += names[:t]
        out["val"] += names[t : t + v]
        out["train"] += names[t + v :]
    return {name: sorted(stems) for name, stems in out.items()}
