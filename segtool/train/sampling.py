"""What the run does about imbalance, resolved from its training masks when it is built:
``--class-weights auto``'s weights and ``--oversample``'s sampler (`imbalance` holds the
rules; the plan printed the same numbers from the same counts)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from segtool.core.classes import ClassMap
from segtool.core.dataset import Pair
from segtool.core.errors import SegtoolError
from segtool.core.regions import Regions
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist
from segtool.train.fingerprint import measure_dataset
from segtool.train.imbalance import draw_probabilities, median_frequency, rare_classes
from segtool.train.loaders import SeededSampler, epoch_draws, numbered


class OversampleSampler(torch.utils.data.Sampler[int]):
    """An epoch of `len(probabilities)` draws with replacement, image i with chance
    ``probabilities[i]``, from `generator` (seeded per epoch by `SeededSampler`, so an epoch's
    draws depend on (seed, epoch) alone); under torchrun every process makes the same draws
    and takes every world-th, each as many (`counted`).

    An image drawn twice gets two crops and augmentations, also when two processes draw it:
    `counted` numbers each draw of an image over the whole epoch's draws, every process's, so
    a sample's seed follows from (seed, epoch, its place among all the draws), whatever the
    number of processes and workers."""

    def __init__(
        self, probabilities: np.ndarray, generator: torch.Generator, rank: int = 0, world: int = 1
    ) -> None:
        self.probabilities = torch.as_tensor(probabilities, dtype=torch.float64)
        self.generator, self.rank, self.world = generator, rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.probabilities) / self.world)

    def __iter__(self) -> Iterator[int]:
        return (index for index, _ in self.counted())

    def counted(self) -> Iterator[tuple[int, int]]:
        """This process's draws, each with the times its image was drawn before it in the
        epoch's draws of every process (0 for a first draw): `SeededSampler` seeds each draw's
        crop and augmentation by it, so no two draws share theirs.

        Every process takes as many (`len`): where the world does not divide the epoch's
        draws, its first ones are drawn again at the end (as torch's DistributedSampler pads),
        or a process would train a batch more than the others and wait on them forever."""
        n = len(self.probabilities)
        drawn = torch.multinomial(self.probabilities, n, replacement=True, generator=self.generator)
        padded = drawn.tolist()
        padded += padded[: len(self) * self.world - n]
        return iter(list(numbered(padded))[self.rank :: self.world])

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: `SeededSampler` seeds the generator for each epoch."""


def train_counts(train: list[Pair], class_map: ClassMap, regions: Regions | None) -> np.ndarray:
    """The training images' pixel counts per class of the masks' own map."""
    fp = measure_dataset(train, regions.source if regions is not None else class_map)
    return fp.image_counts if fp.image_counts is not None else np.zeros((0, 1), np.int64)


def resolve_class_weights(config: TrainConfig, data: object) -> tuple[float, ...] | None:
    """The weights the loss uses: the ones given, or auto's from the training data's counts
    (`build.TrainingData.counts`; a volume folder's data has none).

    Raises:
        SegtoolError: auto on a volume folder.
    """
    if config.class_weights != "auto":
        return config.class_weights
    counts = getattr(data, "counts", None)
    if counts is None:
        raise SegtoolError(
            "--class-weights auto measures a folder of label masks; for a volume folder "
            "give one weight per class, e.g. --class-weights 0.5,1,2"
        )
    return tuple(median_frequency(counts))


def draw_sampler(config: TrainConfig, counts: np.ndarray | None, dist: Dist) -> SeededSampler:
    """`OversampleSampler` over the training images (--oversample is on), its generator
    seeded for each epoch (and each further pass of a longer one) by the `SeededSampler`
    around it.

    Raises:
        SegtoolError: a volume folder (no counts: it trains on slices).
    """
    if counts is None:
        raise SegtoolError(
            f"--oversample {config.oversample:g} draws whole images of a folder of label "
            f"masks; a volume folder trains on slices: drop it (--crop with --fg-crop centres "
            f"patches on foreground)"
        )
    chances = draw_probabilities(counts, rare_classes(counts), config.oversample)
    generator = torch.Generator()
    inner = OversampleSampler(chances, generator, dist.rank, dist.world)
    return SeededSampler(inner, generator, epoch_draws(config))
