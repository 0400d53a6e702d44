"""Validation's device counts (`DeviceCounter`) equal the metrics module's, digit for digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segtool.core.metrics import Counts, confusion_matrix, count, count_multilabel
from segtool.core.multilabel import ignore_value, value_dtype
from segtool.train.counting import DeviceCounter


def _same(a: Counts, b: Counts) -> None:
    for x, y in zip(a.astuple(), b.astuple(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.abstained == b.abstained


def _random_masks(rng, k, ignore, dtype, shape=(3, 17, 23)):
    ref = rng.integers(0, k, size=shape).astype(dtype)
    pred = rng.integers(0, k, size=shape).astype(dtype)
    ref[rng.random(shape) < 0.1] = ignore
    pred[rng.random(shape) < 0.05] = ignore  # abstentions: misses, never scored better
    return ref, pred


@pytest.mark.parametrize(
    ("k", "ignore", "dtype"), [(2, 255, np.uint8), (3, 255, np.uint8), (12, 255, np.uint8),
                               (21, 255, np.uint8), (300, 65535, np.uint16)]
)  # fmt: skip
def test_exclusive_counts_equal_count_per_item_and_pooled(k, ignore, dtype):
    rng = np.random.default_rng(k)
    ref, pred = _random_masks(rng, k, ignore, dtype)
    counter = DeviceCounter(k, ignore, multilabel=False)
    rows = counter.rows(
        torch.from_numpy(ref.astype(np.int64)), torch.from_numpy(pred.astype(np.int64))
    )
    assert rows.shape == (3, k * (k + 1)) and rows.dtype == torch.int64
    pooled = Counts(*(np.zeros(k, dtype=np.int64) for _ in range(3)))
    for i in range(3):
        expected = count(ref[i], pred[i], k, ignore)
        _same(counter.counts(rows[i].numpy()), expected)
        np.testing.assert_array_equal(
            rows[i].numpy().reshape(k, k + 1), confusion_matrix(ref[i], pred[i], k, ignore)
        )
        pooled = pooled + expected
    _same(counter.counts(rows.sum(dim=0).numpy()), pooled)
    assert pooled.abstained > 0  # the case the rule is about was exercised


def test_exclusive_counts_from_a_hand_table():
    # 2 classes + ignore 255. ref [0 1 1 255], pred [0 1 255 1]: class 1 has TP 1, FN 1 (one
    # abstention); the ignored reference pixel is left out whatever was predicted there.
    counter = DeviceCounter(2, 255, multilabel=False)
    rows = counter.rows(torch.tensor([[0, 1, 1, 255]]), torch.tensor([[0, 1, 255, 1]]))
    counts = counter.counts(rows[0].numpy())
    assert counts.tp.tolist() == [1, 1] and counts.fp.tolist() == [0, 0]
    assert counts.fn.tolist() == [0, 1] and counts.abstained == 1


@pytest.mark.parametrize("classes", [3, 10, 40])  # uint8, uint16 and uint64 bit sets
def test_multilabel_counts_equal_count_multilabel(classes):
    k = classes + 1
    dtype = value_dtype(classes)
    ignore = dtype.type(ignore_value(classes))
    rng = np.random.default_rng(classes)
    shape = (3, 13, 11)
    ref = rng.integers(0, 2 ** min(classes, 62), size=shape).astype(dtype)
    pred = rng.integers(0, 2 ** min(classes, 62), size=shape).astype(dtype)
    ref[rng.random(shape) < 0.1] |= ignore
    pred[rng.random(shape) < 0.05] |= ignore
    counter = DeviceCounter(k, int(ignore), multilabel=True)
    # The loaders carry bit values as int64 (uint64's top bit wraps to the sign bit).
    rows = counter.rows(
        torch.from_numpy(ref.astype(np.int64)), torch.from_numpy(pred.astype(np.int64))
    )
    total = None
    for i in range(3):
        expected = count_multilabel(ref[i], pred[i], k)[0]
        _same(counter.counts(rows[i].numpy()), expected)
        total = expected if total is None else total + expected
    _same(counter.counts(rows.sum(dim=0).numpy()), total)
    assert total.abstained > 0


def test_torchrun_adds_every_processs_validation_up_exactly_in_one_all_reduce(monkeypatch):
    """Under torchrun each process's validation counts, summed loss and image count (and a
    volume folder's per-case counts) are added over the processes by one all_reduce each. A
    stand-in for it adds a second process with the same numbers: every value doubles, exact
    for counts far past 2**32."""
    from segtool.train.distributed import Dist, sum_validation
    from segtool.train.volume_data import sum_cases

    calls = []

    def doubled(tensor):  # two processes that counted the same
        calls.append(tensor.dtype)
        tensor.mul_(2)

    monkeypatch.setattr(torch.distributed, "all_reduce", doubled)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "gloo")
    big = 2**40 + 3
    counts = Counts(np.array([big, 5]), np.array([7, big + 1]), np.array([0, 11]))
    two = Dist(rank=0, world=2)
    summed, loss, n = sum_validation(counts, 1.25, 9, torch.device("cpu"), two)
    _same(summed, Counts(np.array([2 * big, 10]), np.array([14, 2 * big + 2]), np.array([0, 22])))
    assert (loss, n) == (2.5, 18) and len(calls) == 1
    one = Counts(np.array([1, 2]), np.array([3, 4]), np.array([5, 6]))
    per_case = {"b": one, "a": counts}
    rows = sum_cases(per_case, ["a", "b", "c"], 2, torch.device("cpu"), two)
    _same(rows[0], Counts(*(2 * x for x in counts.astuple())))
    _same(rows[1], Counts(*(2 * x for x in one.astuple())))
    _same(rows[2], Counts(*(np.zeros(2, np.int64) for _ in range(3))))  # a case seen elsewhere
    assert len(calls) == 2
    alone = sum_validation(counts, 1.25, 9, torch.device("cpu"), Dist())  # no group: no call
    assert alone[0] is counts and alone[1:] == (1.25, 9) and len(calls) == 2
