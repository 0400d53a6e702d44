"""Training's DataLoaders: worker processes that live for the whole run, each index sent to
them with its epoch's seed, pinned batches on a GPU.

Workers used to restart every epoch because the epoch's seed was set on the dataset in the
main process, and a worker holds its own copy of the dataset. `SeededSampler` sends the seed
with every index instead (``(index, epoch seed)``, which the datasets' ``__getitem__`` take),
so the workers persist across epochs and still draw each sample's crop and augmentation from
(seed, epoch, sample) alone: the same numbers with 0, 1 or 16 workers, and on resume.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from segtool.core.classes import ClassMap
from segtool.core.images import open_image
from segtool.core.limits import available_ram
from segtool.core.parallel import ProgressFn, default_jobs
from segtool.train.config import TrainConfig
from segtool.train.data import SegmentationDataset, pad_collate, worker_init
from segtool.train.decoded import (
    MIN_PARALLEL,
    PARALLEL_BYTES,
    DecodedCache,
    choose_decoded,
    decode_pairs,
    decoded_bytes,
)
from segtool.train.distributed import Dist, barrier
from segtool.train.geometry import scaled_shape

#: Batches each worker prepares ahead (DataLoader's prefetch_factor): a GPU step is short.
PREFETCH = 4


#: A pass after an epoch's first (``--epoch-steps``) orders a distributed sampler as its epoch
#: ``epoch + pass * PASS_STRIDE``: apart from every real epoch's order.
PASS_STRIDE = 2**31


def draw_seed(seed: int, order: int, repeat: int = 0) -> int:
    """The seed of a sample's crop and augmentation in pass `order` (from 0) of the epoch
    seeded `seed`, its image drawn for the `repeat`-th time (from 0) in that pass (a sampler
    with replacement draws some twice): the epoch's seed for a first pass's first draws (so
    an epoch of one pass draws as it always did), another for every other (pass, repeat), so
    an image drawn twice in an epoch gets two crops and augmentations. (`order`, 0) also
    orders pass `order`."""
    if order == repeat == 0:
        return seed
    state = np.random.SeedSequence([seed % 2**63, order, repeat, 2]).generate_state(2)
    return int(state[0]) << 31 | int(state[1]) >> 1


def numbered(indices: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Each index with the times it came before (0 the first time): a draw's `repeat`."""
    before: dict[int, int] = {}
    for index in indices:
        before[index] = before.get(index, -1) + 1
        yield index, before[index]


class SeededSampler(Sampler):
    """The indices of `inner` (a random, sequential or distributed sampler), each paired with
    the seed of its crop and augmentation; `set_epoch` seeds the order and the samples of
    the next epoch.

    With `draws` (``--epoch-steps`` times the batch) an epoch is that many indices, taken
    from successive passes over `inner`, each pass ordered afresh from (seed, epoch, pass)
    and each draw's crop and augmentation seeded apart (`draw_seed`). Everything is
    decided here, in the main process: the workers' count and a resume mid-epoch (which
    draws the epoch again from its start) change nothing."""

    def __init__(
        self, inner: Sampler, generator: torch.Generator | None = None, draws: int | None = None
    ) -> None:
        self.inner, self.generator, self.draws = inner, generator, draws or None
        self.seed = self.epoch = 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        """The next epoch's order and samples depend on (`epoch`, `seed`) alone."""
        self.seed, self.epoch = seed, epoch
        if self.generator is not None:
            self.generator.manual_seed(seed)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self.seed
        if self.generator is not None:
            # The draw the DataLoader took from this generator (its workers' base seed) when
            # it shared it: the order stays what it was, and runs started then resume exactly.
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if self.draws is None:
            return ((index, draw_seed(seed, 0, repeat)) for index, repeat in self._counted())
        return self._passes(seed, self.epoch, self.draws)

    def _counted(self) -> Iterator[tuple[int, int]]:
        """One pass of `inner`: each index with the times its image was drawn before in the
        pass, counted over every process's draws where `inner` knows them (`counted`, a
        sampler with replacement under torchrun), else over this process's."""
        if hasattr(self.inner, "counted"):
            return self.inner.counted()
        return numbered(int(i) for i in self.inner)

    def _passes(self, seed: int, epoch: int, draws: int) -> Iterator[tuple[int, int]]:
        """`draws` indices from successive passes, each seeded by `draw_seed`."""
        count, order = 0, 0
        while True:
            self._order_pass(seed, epoch, order)
            empty = True
            for index, repeat in self._counted():
                yield index, draw_seed(seed, order, repeat)
                count, empty = count + 1, False
                if count == draws:
                    return
            if empty:  # nothing to draw from
                return
            order += 1

    def _order_pass(self, seed: int, epoch: int, order: int) -> None:
        """Order pass `order` of the epoch from (seed, epoch, pass) alone (the first pass of a
        generator's sampler as `set_epoch` seeded it)."""
        if self.generator is None and hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch + order * PASS_STRIDE)
        elif self.generator is not None and order:
            self.generator.manual_seed(draw_seed(seed, order))

    def __len__(self) -> int:
        return self.draws or len(self.inner)  # type: ignore[arg-type]


@dataclass
class Loaders:
    """The training and validation batches (and what seeds them per epoch).

    Iterating `Loaders` gives the seeded epoch's training batches. Once they are all drawn,
    the next epoch is seeded by the run's rule (`epoch_seed`) and its workers start loading
    at once, so its first batches are ready when it begins: they load while the epoch just
    ended is validated and saved, instead of after (a DataLoader starts an epoch's loading only
    when it is iterated; persistent workers alone leave that gap)."""

    train_ds: Dataset  # SegmentationDataset, or VolumeSliceDataset for a volume folder
    sampler: SeededSampler
    train: DataLoader
    val: DataLoader
    val_cases: list[str] | None = None  # volume folders: validation is scored per case
    on_device: Any = None  # the training batches' `device_augment.DeviceAugment`, if any
    base_seed: int = 0  #: ``--seed``: each epoch's seed follows from it (`epoch_seed`)
    seeded: tuple[int, int] | None = None  #: (epoch, seed) of the pass seeded last
    ahead: Iterator | None = field(default=None, repr=False)  #: that pass, already loading

    def seed_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Seed the next pass over the training set (by default by the run's rule): its order
        and every sample's crop and augmentation (in the workers too: the seed travels with
        each index). A pass already seeded so and loading is kept."""
        seed = epoch_seed(self.base_seed, epoch) if seed is None else seed
        if self.ahead is not None and self.seeded == (epoch, seed):
            return
        self.ahead, self.seeded = None, (epoch, seed)
        self.sampler.set_epoch(epoch, seed)
        self.train_ds.reseed(seed)  # type: ignore[attr-defined]  # direct indexing

    def __len__(self) -> int:
        return len(self.train)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ahead, self.ahead = self.ahead, None
        yield from ahead if ahead is not None else iter(self.train)
        if self.train.num_workers and self.seeded is not None:  # every batch drawn
            self.seed_epoch(self.seeded[0] + 1)
            self.ahead = iter(self.train)

    def close(self) -> None:
        """End the loaders' worker processes now (they otherwise live as long as the run)."""
        for loader in (self.train, self.val):
            loader._iterator = None  # its __del__ ends the workers


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of `epoch`'s order and samples in a run seeded `seed`: from the two alone, so
    a resumed run repeats exactly what an uninterrupted one would have done."""
    return seed * 100_003 + epoch


def default_workers(device: torch.device) -> int:
    """DataLoader workers: on a GPU up to 4 (cores - 1); on the CPU the model needs every core,
    so none on small machines (loading runs in the main process) and 2 on large ones."""
    cores = default_jobs()
    if device.type == "cpu":
        return 0 if cores <= 4 else 2
    return min(4, max(cores - 1, 0))


def make_loader(
    dataset: Dataset,
    config: TrainConfig,
    run_device: torch.device,
    workers: int,
    ignore: int,
    *,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A loader of `config.batch_size` batches collated by `pad_collate`, in `sampler`'s order
    (default: the dataset's); persistent workers, pinned batches on a GPU.

    The loader draws its workers' base seed from a generator of its own, so neither the
    number of workers nor their persistence moves torch's global random stream (which
    ``last.pt`` saves) or the sampler's."""
    # What this process draws an epoch: under torchrun its share, not the whole split.
    size = len(sampler if sampler is not None else dataset)  # type: ignore[arg-type]
    batch = config.batch_size
    shuffled = sampler is not None and not isinstance(
        getattr(sampler, "inner", sampler), SequentialSampler
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=partial(pad_collate, ignore_index=ignore),
        pin_memory=run_device.type == "cuda",
        drop_last=shuffled and size % batch == 1 and size > batch,  # no batch of one (BatchNorm)
        worker_init_fn=worker_init if workers else None,
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers else None,
    )


def training_sampler(
    dataset: Dataset, rank: int, world: int, seed: int, draws: int | None = None
) -> SeededSampler:
    """A shuffled order, this process's share of it under torchrun, with the epoch's seed;
    `draws` indices an epoch where given (`epoch_draws`), else one pass."""
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        inner: Sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed)
        return SeededSampler(inner, draws=draws)
    generator = torch.Generator()
    return SeededSampler(RandomSampler(dataset, generator=generator), generator, draws)


def epoch_draws(config: TrainConfig) -> int | None:
    """Indices each process draws an epoch: ``--epoch-steps`` batches; None (one pass over
    its share of the training split) without."""
    return config.epoch_steps * config.batch_size if config.epoch_steps else None


def _decoded_size(dataset: SegmentationDataset) -> float:
    """Bytes the pairs take decoded at the dataset's geometry, from the image headers."""
    total = 0.0
    for pair in dataset.pairs:
        with open_image(pair.image) as image:
            height, width = image.height, image.width
        if dataset.box is not None:
            height, width = scaled_shape(height, width, dataset.box, dataset.resize)
        total += decoded_bytes(1, height, width)
    return total


def decoded_cache(
    config: TrainConfig,
    class_map: ClassMap,
    data: Any,
    cache_dir: Path,
    dist: Dist,
    on_progress: ProgressFn | None = None,
) -> DecodedCache | None:
    """The training and validation pairs of `data` decoded once at the run's geometry, where
    ``--decoded`` (planned) says: in RAM (each process its own), or in a memory-mapped entry
    of `cache_dir` (``--cache`` where given; under torchrun on several machines a folder in
    each machine's temporary directory named by the entry's key), written by the first
    process of each machine while the others wait; None with ``off``. Pairs that decode to
    under `decoded.PARALLEL_BYTES` decode in this process; `on_progress` is called as each
    pair is decoded."""
    reader = SegmentationDataset(
        data.train + data.val, class_map, size=config.size, resize=config.resize,
        regions=data.regions,
    )  # fmt: skip
    size = _decoded_size(reader) if config.decoded is None or len(reader) >= MIN_PARALLEL else 0
    where = config.decoded or choose_decoded(size, available_ram(), dist.on_machine)[0]
    if where == "off":
        return None
    counted = partial(on_progress, "decoding the images") if on_progress else None
    jobs = 1 if size < PARALLEL_BYTES else None
    decode = partial(decode_pairs, reader, jobs=jobs, on_progress=counted)
    if where == "ram":
        return decode("ram")
    per_machine = dist.machines > 1 and not config.cache
    if per_machine:  # the run folder being built has another name on every machine
        cache_dir = Path(tempfile.gettempdir()) / "segtool-decoded"
    writer = dist.main or (per_machine and dist.local_rank == 0)
    cache = decode("disk", cache_dir) if writer else None
    barrier(dist)  # the others open what their machine's first process wrote
    return cache or decode_pairs(reader, "disk", cache_dir, build=False)
