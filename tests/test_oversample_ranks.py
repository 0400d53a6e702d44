"""--oversample under torchrun: every process makes the epoch's draws with replacement and
takes every world-th, and each draw's crop and augmentation is seeded by its place among all
the draws, so two processes drawing one image give it two augmentations, and the samples of
an epoch are the same whether 1, 2 or 5 processes share them out, with any number of workers
(and each process takes as many where the world does not divide them).
Processes are simulated by their (rank, world): no process group is needed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from segtool.train.build import Hardware, build_loaders, load_data
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist
from segtool.train.loaders import SeededSampler, draw_seed
from segtool.train.sampling import OversampleSampler
from tests.test_imbalance import rare_dataset

#: Ten images, the first drawn half the time: several draws of it in every epoch.
CHANCES = np.array([0.5] + [0.5 / 9] * 9)


def _keys(rank: int, world: int, draws: int | None = None, epoch: int = 3) -> list:
    generator = torch.Generator()
    inner = OversampleSampler(CHANCES, generator, rank, world)
    sampler = SeededSampler(inner, generator, draws)
    sampler.set_epoch(epoch, 1234)
    return list(sampler)


def test_two_processes_never_share_a_draws_seed():
    ranks = [_keys(rank, 2) for rank in (0, 1)]
    shared = [i for i, _ in ranks[0] if i in {j for j, _ in ranks[1]}]
    assert 0 in shared  # both draw the frequent image ...
    assert not set(ranks[0]) & set(ranks[1])  # ... each with a seed of its own
    for drawn in ranks:
        assert len(set(drawn)) == len(drawn)


def test_the_draws_are_the_same_however_many_processes_share_them():
    alone = _keys(0, 1)
    assert len(alone) == 10 and len(set(alone)) == 10
    # The k-th draw of an image in the epoch (counted over every process) is seeded by k: the
    # first by the epoch's seed, as an epoch without repeats is.
    seen: Counter = Counter()
    for index, seed in alone:
        assert seed == draw_seed(1234, 0, seen[index])
        seen[index] += 1
    for world in (2, 5):
        shared = [key for rank in range(world) for key in _keys(rank, world)]
        assert Counter(shared) == Counter(alone)
    # Epochs of more steps than a pass (--epoch-steps): 2 passes, the same draws again.
    two_passes = _keys(0, 1, draws=20)
    assert len(set(two_passes)) == 20
    halves = _keys(0, 2, draws=10) + _keys(1, 2, draws=10)
    assert Counter(halves) == Counter(two_passes)


def test_every_process_takes_as_many_draws_when_the_world_does_not_divide_them():
    """Ten draws for 3 or 4 processes: each process takes ceil(10 / world), as torch's
    DistributedSampler does, or one would train a batch more than the others and wait on the
    gradients' all_reduce forever. The padding draws come after the epoch's ten, which stay
    what one process draws; each is seeded apart (a repeat of the image it draws again)."""
    alone = _keys(0, 1)
    for world in (3, 4):
        shares = [_keys(rank, world) for rank in range(world)]
        per_rank = -(-10 // world)
        assert [len(share) for share in shares] == [per_rank] * world
        inner = OversampleSampler(CHANCES, torch.Generator(), world - 1, world)
        assert len(inner) == per_rank
        shared = [key for share in shares for key in share]
        assert len(set(shared)) == len(shared) == per_rank * world
        assert not Counter(alone) - Counter(shared)  # the epoch's ten draws, all there


def _samples(dataset, cmap, tmp_path, dist: Dist, workers: int) -> Counter:
    """(image, its device augmentation's parameters) of every sample this process trains on
    in epoch 2."""
    config = TrainConfig(
        oversample=0.5, batch_size=4, workers=workers, augment="light", augment_on="device",
        decoded="off", seed=5,
    )  # fmt: skip
    data = load_data(dataset, tmp_path / "run", config, cmap, resume=False)
    loaders = build_loaders(config, cmap, data, dist, Hardware(torch.device("cpu"), None, False, 0))
    loaders.seed_epoch(2)
    samples: Counter = Counter()
    for batch in loaders.train:
        for stem, params in zip(batch["stem"], batch["augment"], strict=True):
            samples[stem, tuple(params.tolist())] += 1
    loaders.close()
    return samples


def test_processes_augment_an_image_they_both_draw_differently(tmp_path):
    dataset, cmap = rare_dataset(tmp_path / "data", n=20, rare=(0,))
    alone = _samples(dataset, cmap, tmp_path, Dist(), workers=1)
    ranks = [_samples(dataset, cmap, tmp_path, Dist(rank, 2), workers=0) for rank in (0, 1)]
    both = {stem for stem, _ in ranks[0]} & {stem for stem, _ in ranks[1]}
    assert "r00" in both  # the rare image, drawn by each process
    assert not set(ranks[0]) & set(ranks[1])  # never with the same augmentation
    assert ranks[0] + ranks[1] == alone  # the epoch's samples, whatever the layout
