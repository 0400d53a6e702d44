"""Bootstrap intervals: a slow loop written here, SciPy's bootstrap, and hypothesis for the
determinism a reader relies on (same seed, same interval; the order of images irrelevant)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segtool.core import bootstrap
from segtool.core.bootstrap import mean_interval, ratio_interval


def slow_mean_interval(values, seed, resamples, level):
    """Draw images with replacement one resample at a time, from the values sorted."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = [
        np.nanmean(values[row]) if not np.isnan(values[row]).all() else np.nan for row in picks
    ]
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(means, [tail, 100 - tail])


def test_mean_interval_is_the_slow_loop():
    values = np.array([0.91, 0.15, 0.77, 0.62, 0.88, 0.05, 0.5])
    got = mean_interval(values, seed=7, resamples=500)
    assert got == pytest.approx(slow_mean_interval(values, 7, 500, 0.95), rel=1e-12)
    got90 = mean_interval(values, seed=7, resamples=500, level=0.9)
    assert got90 == pytest.approx(slow_mean_interval(values, 7, 500, 0.9), rel=1e-12)
    assert got90[0] >= got[0] and got90[1] <= got[1]


def test_chunked_draws_give_the_same_interval(monkeypatch):
    values = np.random.default_rng(1).random(37)
    whole = mean_interval(values)
    monkeypatch.setattr(bootstrap, "_CHUNK", 100)  # two resamples per chunk
    assert mean_interval(values).tolist() == whole.tolist()


def test_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap as scipy_bootstrap

    values = np.random.default_rng(2).normal(0.7, 0.1, 60)
    theirs = scipy_bootstrap(
        (values,), np.mean, n_resamples=20000, method="percentile", random_state=3
    ).confidence_interval
    ours = mean_interval(values, resamples=20000)
    # different draws, the same distribution: the ends agree to Monte Carlo error
    assert ours == pytest.approx([theirs.low, theirs.high], abs=0.004)


def test_nan_images_are_left_out_of_each_draw_and_columns_are_separate():
    table = np.array([[0.2, np.nan], [0.4, np.nan], [0.9, np.nan], [np.nan, np.nan]])
    got = mean_interval(table, seed=5, resamples=300)
    expected = slow_mean_interval(table[:, 0], 5, 300, 0.95)
    assert got[:, 0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(got[:, 1]).all()  # no image defines the second score
    assert np.isnan(mean_interval(np.zeros(0))).all()


def test_ratio_interval_pools_counts():
    # per image (2TP, 2TP + FP + FN): the pooled Dice is a ratio of sums
    num = np.array([10.0, 0.0, 30.0, 8.0])
    den = np.array([12.0, 5.0, 40.0, 8.0])
    rng = np.random.default_rng(11)
    order = np.lexsort((den, num))
    num_s, den_s = num[order], den[order]
    picks = rng.integers(0, 4, size=(400, 4))
    pooled = [num_s[p].sum() / den_s[p].sum() for p in picks]
    expected = np.percentile(pooled, [2.5, 97.5])
    assert ratio_interval(num, den, seed=11, resamples=400) == pytest.approx(expected, rel=1e-12)


def test_one_image_gives_a_point():
    assert mean_interval(np.array([0.3]), resamples=50) == pytest.approx([0.3, 0.3], rel=1e-12)


values_st = arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.one_of(st.floats(0, 1), st.just(math.nan)),
)


@settings(max_examples=80, deadline=None)
@given(values=values_st, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_same_seed_same_interval_in_any_order(values, seed, data):
    first = mean_interval(values, seed=seed, resamples=200)
    assert np.array_equal(mean_interval(values, seed=seed, resamples=200), first, equal_nan=True)
    order = data.draw(st.permutations(range(len(values))))
    shuffled = mean_interval(values[list(order)], seed=seed, resamples=200)
    assert np.array_equal(shuffled, first, equal_nan=True)


@settings(max_examples=80, deadline=None)
@given(values=values_st, seed=st.integers(0, 2**32 - 1))
def test_interval_contains_the_mean(values, seed):
    low, high = mean_interval(values, seed=seed, resamples=400)
    defined = values[~np.isnan(values)]
    if not defined.size:
        assert math.isnan(low) and math.isnan(high)
        return
    mean = defined.mean()
    assert low <= mean + 1e-12 and mean <= high + 1e-12
    assert defined.min() - 1e-12 <= low <= high <= defined.max() + 1e-12
