"""The volume training loader: slices from segtool's cache versus decoding NIfTI per sample,
and versus what the model consumes in a training step on the CPU.

1. Per-sample NIfTI: what a hand-written dataset does: for every sample, load the case's
   compressed 4-D image and label with nibabel, standardise, take one slice.
2. segtool: ``VolumeSliceDataset`` over the slice cache (decoded once, memory-mapped).
3. The model: training steps (forward, backward, AdamW) of segtool's default U-Net with one
   input channel per sequence, on the same slices, on the CPU.

All three run in this process one after the other, single-threaded loader (no workers).

    python benchmarks/bench_volume_loader.py [--cases 4] [--shape 160 160 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.volumes import standardize
from segtool.sources.volume_folder import read_volume_dataset
from segtool.train.data import pad_collate
from segtool.train.model import build_model
from segtool.train.slices import VolumeSliceDataset
from segtool.train.volumes import build_cache

CHANNELS = ("FLAIR", "T1", "T1Gd", "T2")
LABELS = ("background", "edema", "non-enhancing", "enhancing")


def make_folder(root: Path, n: int, shape: tuple) -> Path:
    """A Decathlon-style folder of brain-like volumes with a tumour blob each."""
    import json

    rng = np.random.default_rng(0)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = np.array(shape) / 2
    brain = (
        sum(((g - c) / (0.42 * s)) ** 2 for g, c, s in zip(grid, centre, shape, strict=True)) < 1
    )
    for i in range(n):
        c = rng.uniform(0.35, 0.65, 3) * np.array(shape)
        d = sum(((g - cc) / 12) ** 2 for g, cc in zip(grid, c, strict=True))
        label = np.zeros(shape, np.uint8)
        label[(d < 1) & brain] = 1
        label[(d < 0.4) & brain] = 2
        label[(d < 0.15) & brain] = 3
        image = rng.normal(100, 15, (*shape, len(CHANNELS))).astype(np.float32)
        image[label > 0] += 60
        image[~brain] = 0
        for folder, data in (("imagesTr", image), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0])),
                str(root / folder / f"case{i:03d}.nii.gz"),
            )
    doc = {
        "modality": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": {str(i): name for i, name in enumerate(LABELS)},
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


class PerSampleNifti(torch.utils.data.Dataset):
    """Decodes the case's NIfTI files for every sample, as a hand-written loader does."""

    def __init__(self, cases: list, depth: int) -> None:
        self.items = [(c, s) for c in cases for s in range(depth)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        case, s = self.items[index]
        image, _ = standardize(nib.load(str(case.images[0])).get_fdata(dtype=np.float32))
        label = np.asanyarray(nib.load(str(case.label)).dataobj)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image[:, :, s].transpose(2, 0, 1))),
            "mask": torch.from_numpy(label[:, :, s].astype(np.int64)),
            "stem": case.case,
        }


def rate(dataset, n: int, rng: np.random.Generator) -> float:
    """Samples per second over `n` random samples."""
    picks = rng.integers(0, len(dataset), n)
    start = time.perf_counter()
    for i in picks:
        dataset[int(i)]
    return n / (time.perf_counter() - start)


def model_rate(dataset, batch: int, steps: int) -> float:
    """Training samples per second of segtool's default U-Net on the CPU."""
    model = build_model("unet", "resnet34", None, len(LABELS), in_channels=len(CHANNELS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    items = [dataset[i] for i in range(batch)]
    data = pad_collate(items, 255)
    model.train()
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up
        loss = loss_fn(model(data["image"]), data["mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 160, 96])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "mri", args.cases, shape)
        volumes = read_volume_dataset(root)
        start = time.perf_counter()
        cached = build_cache(volumes, list(volumes.cases), Path(tmp) / "cache")
        build = time.perf_counter() - start
        ours = VolumeSliceDataset(cached, volumes.class_map, fg_crop=0.33)
        theirs = PerSampleNifti(list(volumes.cases), shape[2])
        print(f"{args.cases} cases {shape} x {len(CHANNELS)} channels; cache built in {build:.1f}s")
        rng = np.random.default_rng(0)
        speedups, margins = [], []
        for _ in range(args.repeats):
            slow = rate(theirs, 6, rng)
            fast = rate(ours, 600, rng)
            consumed = model_rate(ours, args.batch, 3)
            speedups.append(fast / slow)
            margins.append(fast / consumed)
            print(
                f"per-sample NIfTI {slow:8.1f} slices/s  cache {fast:8.1f} slices/s  "
                f"model (CPU training) {consumed:6.1f} slices/s"
            )
        print(
            f"cache vs per-sample NIfTI: {min(speedups):.0f}-{max(speedups):.0f}x; "
            f"loader vs model on the CPU: {min(margins):.0f}-{max(margins):.0f}x"
        )


if __name__ == "__main__":
    main()
