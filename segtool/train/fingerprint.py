"""What the planner knows before training: the dataset's fingerprint and the machine.

The dataset is measured cheaply (image headers, and the masks, in parallel): sizes, channels,
how many pixels and images each class has, and how small its objects are. The machine: the
device, its memory (GPU memory, or free RAM on the CPU) and the cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.dataset import Pair
from segtool.core.images import displayed_size
from segtool.core.limits import available_ram
from segtool.core.masks import read_mask
from segtool.core.multilabel import read_multilabel_mask
from segtool.core.parallel import ProgressFn, default_jobs, imap_jobs, jobs_for, with_progress


@dataclass
class ClassStats:
    """One foreground class over the measured masks."""

    name: str
    share: float  #: its pixels over all labelled (not ignored) pixels
    images: int  #: images in which it appears
    median_object: float  #: median area of its connected objects, in pixels (0: none)


@dataclass
class Fingerprint:
    """What a dataset looks like to the planner."""

    n_images: int
    median_size: tuple[int, int]  #: (height, width), the median of each side
    largest_size: tuple[int, int]  #: (height, width), the largest of each side
    channels: int
    classes: list[ClassStats]
    #: images x classes pixel counts (not in config.json), rows in the order of `stems`
    image_counts: np.ndarray | None = field(default=None, repr=False, compare=False)
    stems: list[str] = field(default_factory=list, repr=False, compare=False)
    #: the training split's stems, once known (`planning.plan_new_run`); None: every image
    train_stems: list[str] | None = field(default=None, repr=False, compare=False)

    def train_counts(self) -> np.ndarray:
        """The pixel counts of the training split's images (every image's until it is known)."""
        counts = self.image_counts if self.image_counts is not None else np.zeros((0, 1))
        if self.train_stems is None:
            return counts
        train = set(self.train_stems)
        return counts[[i for i, s in enumerate(self.stems) if s in train]]

    def rare(self, share: float = 0.01) -> list[ClassStats]:
        """Classes with fewer than `share` of the labelled pixels, or in under 10% of images."""
        return [c for c in self.classes if c.share < share or c.images < 0.1 * self.n_images]

    def smallest_object(self) -> float:
        """The median object area of the class with the smallest objects (0: no objects)."""
        areas = [c.median_object for c in self.classes if c.median_object > 0]
        return min(areas) if areas else 0.0

    def to_json(self) -> dict[str, Any]:
        """A plain dict for config.json (without the per-image counts)."""
        hidden = ("image_counts", "stems", "train_stems")
        return {k: v for k, v in asdict(self).items() if k not in hidden}


@dataclass
class Machine:
    """The hardware the run will use."""

    device: str  #: cpu, cuda or mps
    name: str  #: the GPU's name, or the CPU architecture
    memory_gb: float  #: GPU memory, or the RAM free now
    cores: int
    ram_gb: float | None = None  #: the RAM free now (None: not measured; memory_gb off a GPU)
    processes: int = 1  #: the run's processes on this machine (torchrun's), sharing its RAM

    @property
    def free_ram_gb(self) -> float:
        """The RAM free now: measured, else `memory_gb` on a CPU (0 when unknown on a GPU)."""
        if self.ram_gb is not None:
            return self.ram_gb
        return 0.0 if self.device == "cuda" else self.memory_gb

    def to_json(self) -> dict[str, Any]:
        """A plain dict for config.json."""
        return asdict(self)


def _measure_pair(args: tuple[Pair, int, bool]) -> tuple[int, int, int, np.ndarray, list]:
    """(height, width, channels, pixel counts per class, object areas per class) of a pair."""
    import cv2
    from PIL import Image

    pair, k, multilabel = args
    width, height, _ = displayed_size(pair.image, verify=False)
    with Image.open(pair.image) as img:
        channels = len(img.getbands())
    if multilabel:  # each class its own plane; background: labelled pixels of no class
        planes, ignored = read_multilabel_mask(pair.mask, k)
        planes = np.concatenate([~planes.any(axis=0, keepdims=True), planes]) & ~ignored
    else:
        mask = read_mask(pair.mask)
        planes = np.stack([mask == c for c in range(k)])
    counts = planes.reshape(k, -1).sum(axis=1)
    areas: list[list[int]] = [[] for _ in range(k)]
    for c in np.flatnonzero(counts[1:]) + 1:
        n, _, stats, _ = cv2.connectedComponentsWithStats(planes[c].astype(np.uint8), 8)
        areas[c] = stats[1:n, cv2.CC_STAT_AREA].tolist()
    return height, width, channels, counts, areas


def measure_dataset(
    pairs: list[Pair],
    class_map: ClassMap,
    jobs: int | None = None,
    on_progress: ProgressFn | None = None,
) -> Fingerprint:
    """Measure image headers and masks over `jobs` processes.

    Args:
        pairs: the dataset's image/mask pairs (checked by the caller).
        class_map: the classes and the ignore value.
        jobs: worker processes (default: every core, none for a few hundred pairs).
        on_progress: called as each pair is measured ("measuring the images and masks").

    Returns:
        The dataset's fingerprint.
    """
    k = class_map.num_classes
    jobs = min(jobs or jobs_for(len(pairs)), max(len(pairs) // 16, 1))
    heights, widths, channels = [], [], []
    counts = np.zeros(k, dtype=np.int64)
    images = np.zeros(k, dtype=np.int64)
    areas: list[list[int]] = [[] for _ in range(k)]
    rows = []
    measured = imap_jobs(_measure_pair, ((p, k, class_map.multilabel) for p in pairs), jobs)
    phase = "measuring the images and masks"
    for h, w, ch, pixels, objects in with_progress(measured, phase, len(pairs), on_progress):
        heights.append(h)
        widths.append(w)
        channels.append(ch)
        counts += pixels
        rows.append(pixels)
        images += pixels > 0
        for c in range(k):
            areas[c] += objects[c]
    total = max(int(counts.sum()), 1)
    classes = [
        ClassStats(
            name,
            float(counts[c]) / total,
            int(images[c]),
            float(np.median(areas[c])) if areas[c] else 0.0,
        )
        for c, name in enumerate(class_map.names)
        if c
    ]
    return Fingerprint(
        n_images=len(pairs),
        median_size=(int(np.median(heights)), int(np.median(widths))) if pairs else (0, 0),
        largest_size=(max(heights, default=0), max(widths, default=0)),
        channels=max(set(channels), key=channels.count) if channels else 3,
        classes=classes,
        image_counts=np.array(rows, dtype=np.int64).reshape(len(rows), k),
        stems=[p.stem for p in pairs],
    )


def _free_ram_gb() -> float:
    return available_ram() / 2**30


def measure_machine(device: str = "auto") -> Machine:
    """The device `device` resolves to, its memory and the cores.

    Raises:
        SegtoolError: a device this machine does not have.
    """
    import platform

    import torch

    from segtool.core.device import pick_device
    from segtool.train.distributed import Dist

    chosen = pick_device(device)
    processes = Dist.from_env().on_machine  # each holds its own decoded images
    if chosen.type == "cuda":
        props = torch.cuda.get_device_properties(chosen)
        gpu = props.total_memory / 2**30
        return Machine("cuda", props.name, gpu, default_jobs(), _free_ram_gb(), processes)
    ram = _free_ram_gb()
    return Machine(chosen.type, platform.machine() or "cpu", ram, default_jobs(), ram, processes)
