"""Bootstrap confidence intervals over images (cases for volumes), seeded and stated.

A mean over 20 test images printed to three decimals says nothing of its uncertainty. The
interval here is the percentile bootstrap (Efron): draw the images with replacement
`RESAMPLES` times, recompute the score on each draw, and report the 2.5th and 97.5th
percentiles of those scores (linear interpolation) for a 95 % interval.

Every score segtool averages is a ratio of sums over images, so one routine serves them all
(`ratio_interval`): a mean over images of a per-image value is sum(values) / sum(defined)
(an image whose value is undefined, NaN, is left out of that draw's mean as it is of the
mean itself), and a pooled score such as the dataset Dice 2TP / (2TP + FP + FN) is
sum(numerators) / sum(denominators) of the images' counts.

Determinism: the draws come from NumPy's PCG64 generator seeded with `seed` (default
`SEED`), over the images sorted by their names (evaluate), or by their values where no names
are given, so the same images give the same interval whatever their order, and the same seed
the same interval on every machine. With names every score is drawn over the same resampled
image sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Draws per interval.
RESAMPLES = 2000
#: Coverage of the interval.
LEVEL = 0.95
#: The default seed of the draws.
SEED = 0
#: Draws are made this many image-weights at a time, bounding memory for large folders.
_CHUNK = 1 << 16


def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """resamples x n: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, n))
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        picks = rng.integers(0, n, size=(rows, n))
        flat = picks + (np.arange(rows) * n)[:, None]
        out[start : start + rows] = np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n)
    return out


def _canonical(*tables: np.ndarray, keys: Sequence[str] | None = None) -> list[np.ndarray]:
    """The tables' rows (one per image) in the order of `keys` (the images' names), or
    without keys in an order that depends only on their values."""
    if keys is not None:
        if len(keys) != len(tables[0]):
            raise ValueError(f"{len(keys)} keys for {len(tables[0])} images")
        order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
        return [t[order] for t in tables]
    joined = np.concatenate([t.reshape(len(t), -1) for t in tables], axis=1)
    order = np.lexsort(joined.T[::-1]) if joined.size else np.arange(len(joined))
    return [t[order] for t in tables]


def draws(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """sum(numerator) / sum(denominator) over the images of each bootstrap draw, for every
    score (column) at once: all columns share the draws, so a mean over columns (classes) of
    each draw's scores is that mean's bootstrap distribution.

    Args:
        numerator: n x m, one row per image, one column per score.
        denominator: n x m; a draw whose denominator sums to 0 has no value (NaN).
        seed: seeds the draws.
        resamples: draws.
        keys: one name per image, unique; the draws are made over the images in the order
            of their names (default: in the order of their rows' values).

    Returns:
        resamples x m.
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2:
        raise ValueError(f"numerator {num.shape} and denominator {den.shape}: two n x m tables")
    stats = np.full((resamples, num.shape[1]), np.nan)
    if not len(num):
        return stats
    num, den = _canonical(num, den, keys=keys)
    weights = _weights(len(num), resamples, seed)
    num_sums, den_sums = weights @ num, weights @ den
    np.divide(num_sums, den_sums, out=stats, where=den_sums > 0)
    return stats


def interval(stats: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """The percentile interval of bootstrap draws (resamples x m, NaN: no value): 2 x m, the
    lower and upper ends (linear interpolation), NaN where no draw has a value."""
    if not 0 < level < 1:
        raise ValueError(f"level {level} is not between 0 and 1")
    stats = np.asarray(stats, dtype=np.float64).reshape(len(stats), -1)
    tail = (1 - level) / 2 * 100
    out = np.full((2, stats.shape[1]), np.nan)
    defined = ~np.isnan(stats).all(axis=0)
    if defined.any():
        out[:, defined] = np.nanpercentile(stats[:, defined], [tail, 100 - tail], axis=0)
    return out


def ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Percentile-bootstrap interval of sum(numerator) / sum(denominator) over images.

    Args:
        numerator: one row per image: a value (n,) or one value per score (n x m).
        denominator: the same shape.
        seed: seeds the draws.
        resamples: draws.
        level: coverage (0.95: the 2.5th and 97.5th percentiles).
        keys: as `draws`.

    Returns:
        (2,) or (2 x m): the lower and upper ends; NaN where no draw has a value (no image, or
        every denominator 0).
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape:
        raise ValueError(f"numerator {num.shape} and denominator {den.shape} differ in shape")
    columns = (lambda t: t[:, None]) if num.ndim == 1 else (lambda t: t)
    stats = draws(columns(num), columns(den), seed=seed, resamples=resamples, keys=keys)
    return interval(stats, level).reshape((2, *num.shape[1:]))


def mean_interval(
    values: np.ndarray,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Percentile-bootstrap interval of the mean over images of per-image values; NaN values
    (undefined for that image) are left out of each draw's mean, as of the mean itself.

    Args:
        values: (n,) or (n x m), one row per image.
        seed, resamples, level, keys: as `ratio_interval`.

    Returns:
        (2,) or (2 x m): the lower and upper ends.
    """
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    return ratio_interval(
        np.where(defined, values, 0.0),
        defined,
        seed=seed,
        resamples=resamples,
        level=level,
        keys=keys,
    )
