"""The training loader's CPU cost per 512² image: decoding and augmenting every sample (the old
path) versus reading segtool's decoded cache, with the augmentation on the device.

1. old: ``SegmentationDataset`` reading the files (PNG decode), albumentations per sample,
   collated by ``pad_collate``: what a loader worker spends per image.
2. cached: the same dataset over the decoded cache (``--decoded ram``): no decode, no CPU
   augmentation (it runs on the device, as the plan chooses on a GPU), collated.
3. cached + albumentations: the cache with the CPU augmentation kept (CPU-only runs).
4. device augmentation (``segtool.train.device_augment``) of whole batches, measured on the
   CPU here (on a GPU it runs there, beside the model).

Also: filling the cache (decode once, per image) and reading + flipping + copying one 512²
sample from it. CPU time of this process (``time.process_time``), one thread, no workers:
a worker's cost per image; a GPU machine divides it by its workers.

    python benchmarks/bench_loader.py [--images 300] [--size 512] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from segtool.core.classes import read_classes_json
from segtool.core.dataset import find_pairs
from segtool.train.data import SegmentationDataset, pad_collate, to_model_input
from segtool.train.decoded import decode_pairs
from segtool.train.transforms import build_augmentation
from tests.synthetic import make_dataset


def cpu_ms_per_image(dataset: SegmentationDataset, batch: int, rounds: int = 1) -> float:
    """CPU milliseconds per image of reading every sample and collating batches."""
    n = len(dataset)
    start = time.process_time()
    for r in range(rounds):
        for first in range(0, n - batch + 1, batch):
            pad_collate([dataset[(i, r)] for i in range(first, first + batch)], 255)
    return (time.process_time() - start) * 1000 / (rounds * (n // batch) * batch)


def device_augment_ms(dataset: SegmentationDataset, preset: str, batch: int) -> float | None:
    """CPU milliseconds per image of the device augmentation run on the CPU (None when this
    segtool has none)."""
    try:
        from segtool.train.device_augment import DeviceAugment
    except ImportError:
        return None
    augment = DeviceAugment(preset, 255)
    items = [dataset[(i, 0)] for i in range(batch)]
    for i, item in enumerate(items):
        item["augment"] = augment.draw(i + 1)
    data = pad_collate(items, 255)
    images = to_model_input(data["image"], torch.device("cpu"))
    masks = data["mask"].long()
    augment(images, masks, data["augment"])  # warm-up
    rounds = 5
    start = time.process_time()
    for _ in range(rounds):
        augment(images, masks, data["augment"])
    return (time.process_time() - start) * 1000 / (rounds * batch)


def read_flip_copy_ms(cache, stems: list[str], repeats: int = 200) -> float:
    """CPU ms to read one sample from the cache, flip it and copy it (image and mask)."""
    import cv2

    start = time.process_time()
    for i in range(repeats):
        image, mask, _ = cache.item(stems[i % len(stems)])
        cv2.flip(image, 1), cv2.flip(mask, 1)  # a new array each (as albumentations flips)
    return (time.process_time() - start) * 1000 / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "data", n=args.images, size=args.size)
        pairs, _ = find_pairs(root)
        class_map = read_classes_json(root / "classes.json")
        files = SegmentationDataset(pairs, class_map)
        start = time.process_time()
        cache = decode_pairs(files, "ram", jobs=1)
        fill = (time.process_time() - start) * 1000 / len(pairs)
        print(f"{len(pairs)} synthetic {args.size}² images, batch {args.batch}, one thread")
        print(f"  fill the cache (decode once):    {fill:6.2f} CPU ms/image")
        stems = [p.stem for p in pairs]
        print(f"  read + flip + copy from cache:   {read_flip_copy_ms(cache, stems):6.2f} CPU ms")
        for preset in ("light", "strong"):
            albumentations = build_augmentation(preset, 255)
            old = SegmentationDataset(pairs, class_map, augment=albumentations)
            cached = SegmentationDataset(pairs, class_map, decoded=cache)
            cached_cpu = SegmentationDataset(
                pairs, class_map, augment=albumentations, decoded=cache
            )
            old_ms = cpu_ms_per_image(old, args.batch)
            cached_ms = cpu_ms_per_image(cached, args.batch, rounds=2)
            cached_cpu_ms = cpu_ms_per_image(cached_cpu, args.batch)
            device_ms = device_augment_ms(cached, preset, args.batch)
            print(f"{preset}:")
            print(f"  old (decode + albumentations):   {old_ms:6.2f} CPU ms/image")
            print(
                f"  cached, augmented on the device: {cached_ms:6.2f} CPU ms/image  "
                f"({old_ms / cached_ms:.1f}x less)"
            )
            print(
                f"  cached + albumentations:         {cached_cpu_ms:6.2f} CPU ms/image  "
                f"({old_ms / cached_cpu_ms:.1f}x less)"
            )
            if device_ms is not None:
                print(f"  device augmentation on the CPU:  {device_ms:6.2f} CPU ms/image")


if __name__ == "__main__":
    main()
