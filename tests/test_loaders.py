"""Training's loaders: persistent workers that get each epoch's seed with every index."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler, SequentialSampler

from segtool.train.checkpoint import load_checkpoint
from segtool.train.loaders import SeededSampler
from segtool.train.loop import fit
from tests.synthetic import make_dataset


class Keys(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, key):
        return key


def test_the_sampler_sends_each_index_with_its_epochs_seed():
    generator = torch.Generator()
    sampler = SeededSampler(RandomSampler(Keys(), generator=generator), generator)
    sampler.set_epoch(1, 101)
    first = list(sampler)
    assert sorted(i for i, _ in first) == [0, 1, 2, 3, 4] and {s for _, s in first} == {101}
    sampler.set_epoch(2, 102)
    second = list(sampler)
    assert {s for _, s in second} == {102} and second != [(i, 102) for i, _ in first]
    sampler.set_epoch(1, 101)
    assert list(sampler) == first  # an epoch's order depends on its seed alone
    assert list(SeededSampler(SequentialSampler(Keys()))) == [(i, 0) for i in range(5)]


def test_persistent_workers_see_each_epochs_seed(tmp_path):
    """The keys reach the workers' datasets with the seed of the epoch being loaded, though
    the workers started in the first epoch (and never restart)."""
    from segtool.train.config import TrainConfig
    from segtool.train.loaders import make_loader

    config = TrainConfig(batch_size=5, seed=3)
    generator = torch.Generator()
    sampler = SeededSampler(RandomSampler(Keys(), generator=generator), generator)
    loader = make_loader(Keys(), config, torch.device("cpu"), 2, 255, sampler=sampler)
    loader.collate_fn = list  # the keys themselves
    seen, pids = [], set()
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch, 1000 + epoch)
        seen.append({s for batch in loader for _, s in batch})
        pids.add(tuple(w.pid for w in loader._iterator._workers))
    assert seen == [{1001}, {1002}, {1003}] and len(pids) == 1


def test_the_same_weights_with_0_1_and_3_persistent_workers(tmp_path):
    """Two epochs with crops and augmentation: the order and every sample's draw come from
    (seed, epoch, sample) through the sampler, so the worker count cannot change a weight."""
    data = make_dataset(tmp_path / "data", n=10, size=40)
    options = {"encoder": "resnet18", "batch_size": 4, "augment": "light", "lr": 3e-3,
               "epochs": 2, "crop": 32, "decoder_channels": (16, 16, 16, 16, 16)}  # fmt: skip
    weights = []
    for workers in (0, 1, 3):
        fit(data, tmp_path / f"w{workers}", workers=workers, **options)
        weights.append(load_checkpoint(tmp_path / f"w{workers}/checkpoints/last.pt")["model"])
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
