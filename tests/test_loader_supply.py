"""The loader keeps a GPU fed across epoch boundaries: a stand-in for the model that takes a
fixed time per batch (sleeping, as a GPU step leaves the host's cores to the loader) finds its
next batch already loaded at every request once warmed up, at the start of each epoch too.

Readiness is counted, not timed: each worker marks the samples of a batch it has collated in
shared memory, and before each request the consumer checks that every sample of the batch it
is about to get is marked. No assertion reads a clock.
"""

from __future__ import annotations

import multiprocessing
import time

import torch
from torch.utils.data import Dataset

from segtool.train.config import TrainConfig
from segtool.train.loaders import Loaders, epoch_seed, make_loader, training_sampler

SAMPLES, BATCH, WORKERS, EPOCHS, SEED = 24, 4, 2, 4, 5
#: The loader's work per sample, wall time (a worker waits as it would on a file read).
SAMPLE_SECONDS = 0.002


class Marked(Dataset):
    """Keys in, keys out, after `SAMPLE_SECONDS`; collated batches are marked in `done`, one
    flag per (epoch, sample), shared with the workers (forked after it is made)."""

    def __init__(self) -> None:
        self.done = multiprocessing.RawArray("b", (EPOCHS + 2) * SAMPLES)
        self.seed = 0

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, key):
        time.sleep(SAMPLE_SECONDS)
        return key

    def collate(self, keys: list) -> list:
        for index, seed in keys:
            self.done[(seed - SEED * 100_003) * SAMPLES + index] = 1
        return keys


def order(epoch: int) -> list[int]:
    """The samples of `epoch` in the order the run's sampler gives them (a twin sampler)."""
    twin = training_sampler(Marked(), 0, 1, SEED)
    twin.set_epoch(epoch, epoch_seed(SEED, epoch))
    return [index for index, _ in twin]


def loaders(dataset: Marked) -> Loaders:
    config = TrainConfig(batch_size=BATCH, seed=SEED)
    sampler = training_sampler(dataset, 0, 1, SEED)
    train = make_loader(dataset, config, torch.device("cpu"), WORKERS, 255, sampler=sampler)
    train.collate_fn = dataset.collate
    return Loaders(dataset, sampler, train, train, base_seed=SEED)


def loader_seconds_per_batch() -> float:
    """The loader's own cost per batch, in this process: a few batches read and collated."""
    dataset = Marked()
    start = time.perf_counter()
    for b in range(3):
        dataset.collate([dataset[(i, SEED * 100_003 + 1)] for i in range(b, b + BATCH)])
    return (time.perf_counter() - start) / 3


def consume(run: Loaders, dataset: Marked, step: float, validation: float) -> list[list[bool]]:
    """`EPOCHS` epochs as the trainer runs them: seed, one `step` per batch, then validation
    (`validation` seconds on other data); per epoch, whether each batch was ready when asked."""
    ready = []
    for epoch in range(1, EPOCHS + 1):
        run.seed_epoch(epoch)
        expected = order(epoch)
        batches, flags = iter(run), []
        for b in range(len(run)):
            wanted = expected[b * BATCH : (b + 1) * BATCH]
            flags.append(all(dataset.done[epoch * SAMPLES + i] for i in wanted))
            keys = next(batches)
            assert [i for i, _ in keys] == wanted  # the sampler's order, the epoch's seed
            time.sleep(step)  # the model's step
        assert next(batches, None) is None
        ready.append(flags)
        time.sleep(validation)
    return ready


def test_each_batch_is_ready_when_asked_across_epoch_boundaries():
    step = max(1.25 * loader_seconds_per_batch() / WORKERS, 0.01)
    dataset = Marked()
    run = loaders(dataset)
    try:
        ready = consume(run, dataset, step, validation=8 * step)
    finally:
        run.close()
    # Epoch 1 warms up (workers start); from then on the consumer never waits, its first
    # batch included: it was loading while the epoch before was validated.
    assert all(all(flags) for flags in ready[1:]), ready
    assert all(flags[0] for flags in ready[1:])


def test_without_the_early_start_each_epoch_begins_with_a_wait():
    """The same consumer over the DataLoader alone (persistent workers, prefetch): each epoch's
    first batch is not loaded when asked, since loading starts only then. This is what the
    test above guards against."""
    step = max(1.25 * loader_seconds_per_batch() / WORKERS, 0.01)
    dataset = Marked()
    run = loaders(dataset)
    run.__class__ = type("NoEarlyStart", (Loaders,), {"__iter__": lambda self: iter(self.train)})
    try:
        ready = consume(run, dataset, step, validation=8 * step)
    finally:
        run.close()
    assert not any(flags[0] for flags in ready[1:]), ready
