"""predict's reading: images decoded in DataLoader workers (plain JPEG files on a GPU, where
torchvision can: `decoding.py`), batched by size.

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
from segtool.predict.decoding import decode, decode_on_device, jpeg_bytes
from segtool.train.data import normalize

if TYPE_CHECKING:
    import torch

    from segtool.predict.engine import Engine
    from segtool.predict.ensemble import Ensemble

#: How many images, in the folder's order, may wait for a batch of their size to fill, in
#: batches: a bucket still short when more wait is sent as it is, so reading stays near the
#: folder's order (the first outputs come early) whatever the mix of sizes.
WINDOW_BATCHES = 4


class ImageFiles(Dataset):
    """Images read (EXIF applied) in DataLoader workers, or, `on_device`, a plain JPEG's bytes
    for the device to decode (`decoding.read_image`); unreadable ones come back as errors."""

    def __init__(self, paths: list[Path], normalization: str, on_device: bool = False) -> None:
        self.paths = paths
        self.normalization = normalization
        self.on_device = on_device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_image(self.paths[index], self.normalization, self.on_device)


def read_image(path: Path, normalization: str, on_device: bool) -> dict[str, Any]:
    """One image as the readers hand it over: its model input and picture decoded on the
    host, or (`on_device`, a plain JPEG: `decoding.jpeg_bytes`) its bytes for the device; an
    unreadable image as its error line."""
    if on_device:
        data = jpeg_bytes(path)
        if data is not None:
            return {"path": path, "jpeg": data}
    try:
        image = load_rgb(path)
    except SegtoolError as exc:
        return {"path": path, "error": str(exc)}
    return {"path": path, "image": image, "input": normalize(image, normalization)}


def decode_jpegs(batch: list[dict[str, Any]], device: torch.device, normalization: str) -> None:
    """Decode the batch's JPEG bytes on `device` in one call (`decoding.decode`), each item's
    ``input`` a ``(3, H, W)`` uint8 tensor there; if the device refuses any, those items are
    read on the host instead (`read_image`, its errors included)."""
    waiting = [item for item in batch if "jpeg" in item]
    decoded = decode([item.pop("jpeg") for item in waiting], device) if waiting else None
    for index, item in enumerate(waiting):
        if decoded is None:
            item.update(read_image(item["path"], normalization, on_device=False))
        else:
            item["input"] = decoded[index]


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
    overlays: bool = False,
) -> DataLoader:
    """Images decoded in DataLoader workers (JPEG files on a GPU, where
    `decoding.decode_on_device` says so: their bytes, decoded there by `decode_jpegs`),
    batched by the engine's `batch_key` (the model input's padded size; one at a time when
    tiling), each worker a few batches ahead of the model."""
    device = engine.device
    if workers is None:  # on the CPU the model needs every core; decoding is cheap next to it
        workers = 0 if len(paths) <= 8 or device.type == "cpu" else min(8, default_jobs() - 1)
    size = 1 if engine.one_at_a_time else batch_size
    keys = [engine.batch_key(s) for s in sizes]
    on_device = decode_on_device(device, engine.p.normalization, overlays)
    return DataLoader(
        ImageFiles(paths, engine.p.normalization, on_device),
        batch_sampler=size_batches(keys, size, WINDOW_BATCHES * size),
        num_workers=workers,
        collate_fn=list,  # the items as they are (unreadable ones among them)
        pin_memory=device.type == "cuda",  # the batch's copy to the GPU does not wait
    )
