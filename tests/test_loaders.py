"""Training's loaders: persistent workers that get each epoch's seed with every index."""

from __future__ import annotations

import numpy as np
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


def test_on_a_gpu_batches_are_pinned_prefetched_and_the_workers_persist():
    """What lets a GPU step start without waiting: pinned batches (their copy does not block),
    each worker several batches ahead (more than DataLoader's 2), workers kept across
    epochs; on the CPU nothing is pinned."""
    from segtool.train.config import TrainConfig
    from segtool.train.loaders import PREFETCH, make_loader

    config = TrainConfig(batch_size=2)
    gpu = make_loader(Keys(), config, torch.device("cuda"), 2, 255)
    assert gpu.pin_memory and gpu.persistent_workers and gpu.num_workers == 2
    assert gpu.prefetch_factor == PREFETCH > 2
    cpu = make_loader(Keys(), config, torch.device("cpu"), 0, 255)
    assert not cpu.pin_memory and not cpu.persistent_workers


def test_on_several_machines_each_builds_one_decoded_cache_outside_the_run(tmp_path, monkeypatch):
    """Under torchrun on two machines the run folder being built has another name on each, so
    a disk cache is not inside it: each machine's first process decodes into its temporary
    folder, named by the data's key, and the machine's other processes open that entry."""
    import tempfile

    from segtool.core.classes import read_classes_json
    from segtool.train import loaders
    from segtool.train.build import load_data
    from segtool.train.config import TrainConfig
    from segtool.train.distributed import Dist

    data = make_dataset(tmp_path / "data", n=8, size=32)
    class_map = read_classes_json(data / "classes.json")
    config = TrainConfig(decoded="disk", batch_size=2)
    loaded = load_data(data, tmp_path / "run", config, class_map, resume=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    waits = []
    monkeypatch.setattr(loaders, "barrier", lambda dist: waits.append(dist.rank))

    def cache(dist: Dist, run: str):
        return loaders.decoded_cache(config, class_map, loaded, tmp_path / run / "cache", dist)

    a = cache(Dist(rank=2, world=4, local_rank=0, local_world=2), ".run-hostA-11")  # writes
    b = cache(Dist(rank=3, world=4, local_rank=1, local_world=2), ".run-hostA-11")  # opens
    c = cache(Dist(rank=0, world=4, local_rank=0, local_world=2), ".run-hostB-22")  # writes
    assert a.folder == b.folder == c.folder and a.folder.parent == tmp_path / "tmp/segtool-decoded"
    assert not (tmp_path / ".run-hostA-11").exists() and not (tmp_path / ".run-hostB-22").exists()
    stem = loaded.train[0].stem
    for x, y in zip(a.item(stem)[:2], b.item(stem)[:2], strict=True):
        assert np.array_equal(x, y)
    assert waits == [2, 3, 0]
    one = cache(Dist(rank=0, world=4, local_rank=0, local_world=4), "run-one")  # one machine
    assert one.folder.parent == tmp_path / "run-one" / "cache"


class Ten(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        return {"image": torch.zeros(3, 2, 2, dtype=torch.uint8), "mask": torch.zeros(2, 2)}


def test_no_process_trains_a_batch_of_one_under_torchrun():
    """Ten training images on two processes: each takes five, which batches of 4 would leave
    a batch of one (BatchNorm cannot train on it where the deepest features are 1x1). The
    rule against it counts this process's share, not the whole training split (10 % 4 is 2)."""
    from torch.utils.data.distributed import DistributedSampler

    from segtool.train.config import TrainConfig
    from segtool.train.loaders import make_loader

    config = TrainConfig(batch_size=4)
    for rank in (0, 1):
        share = SeededSampler(DistributedSampler(Ten(), 2, rank, shuffle=True, seed=0))
        loader = make_loader(Ten(), config, torch.device("cpu"), 0, 255, sampler=share)
        assert len(share) == 5 and len(loader) == 1
    alone = make_loader(
        Ten(),
        config,
        torch.device("cpu"),
        0,
        255,
        sampler=SeededSampler(RandomSampler(Ten(), generator=torch.Generator()), torch.Generator()),
    )
    assert len(alone) == 3  # 4, 4 and 2
