"""predict's reading: images decoded in DataLoader workers, batched by size.

An image's mask must not depend on the images it shares a batch with: a batch is padded to
its largest image, and padding changes predictions near the border. So a batch holds only
images whose padded size (their size rounded up to whole strides, what a batch of one pads
them to) is the same, and each image's mask is the one it gets in a batch of its own, whatever
the batch size or its neighbours.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset

from segtool.core.errors import SegtoolError
from segtool.core.images import ImageReadError, displayed_size, load_rgb
from segtool.core.parallel import default_jobs
from segtool.train.data import normalize

if TYPE_CHECKING:
    from segtool.predict.engine import Engine
    from segtool.predict.ensemble import Ensemble

#: How many images, in the folder's order, may wait for a batch of their size to fill, in
#: batches: a bucket still short when more wait is sent as it is, so reading stays near the
#: folder's order (the first outputs come early) whatever the mix of sizes.
WINDOW_BATCHES = 4


class ImageFiles(Dataset):
    """Images read (EXIF applied) in DataLoader workers; unreadable ones come back as errors."""

    def __init__(self, paths: list[Path], normalization: str) -> None:
        self.paths = paths
        self.normalization = normalization

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = load_rgb(path)
        except SegtoolError as exc:
            return {"path": path, "error": str(exc)}
        return {"path": path, "image": image, "input": normalize(image, self.normalization)}


def readable(paths: list[Path]) -> tuple[list[Path], list[tuple[int, int]], list[str]]:
    """Split images into those whose header reads (within the pixel limit), with their
    ``(height, width)`` as displayed, and the errors of the rest."""
    good, sizes, bad = [], [], []
    for path in paths:
        try:
            width, height, _ = displayed_size(path, verify=False)
        except ImageReadError as exc:
            bad.append(f"{path}: {exc}")
            continue
        good.append(path)
        sizes.append((height, width))
    return good, sizes, bad


def size_batches(keys: Sequence[Hashable], batch_size: int, window: int) -> list[list[int]]:
    """Indices of `keys` in batches of equal keys: a bucket goes out when it holds
    `batch_size`, or, when more than `window` indices wait, the bucket whose first index is
    oldest goes out as it is; the rest at the end, oldest first. Every index once."""
    batches: list[list[int]] = []
    waiting: dict[Hashable, list[int]] = {}  # in the order of each bucket's first index
    held = 0
    for index, key in enumerate(keys):
        bucket = waiting.setdefault(key, [])
        bucket.append(index)
        held += 1
        if len(bucket) == batch_size:
            batches.append(waiting.pop(key))
            held -= batch_size
        elif held > window:
            batches.append(waiting.pop(next(iter(waiting))))
            held -= len(batches[-1])
    return batches + list(waiting.values())


def image_loader(
    paths: list[Path],
    sizes: list[tuple[int, int]],
    engine: Engine | Ensemble,
    batch_size: int,
    workers: int | None,
) -> DataLoader:
    """Images decoded in DataLoader workers, batched by the engine's `batch_key` (the model
    input's padded size; one at a time when tiling), each worker a few batches ahead of the
    model."""
    if workers is None:  # on the CPU the model needs every core; decoding is cheap next to it
        cpu = engine.device.type == "cpu"
        workers = 0 if len(paths) <= 8 or cpu else min(8, default_jobs() - 1)
    size = 1 if engine.one_at_a_time else batch_size
    keys = [engine.batch_key(s) for s in sizes]
    return DataLoader(
        ImageFiles(paths, engine.p.normalization),
        batch_sampler=size_batches(keys, size, WINDOW_BATCHES * size),
        num_workers=workers,
        collate_fn=list,  # the items as they are (unreadable ones among them)
        pin_memory=engine.device.type == "cuda",  # the batch's copy to the GPU does not wait
    )
