"""The loss study: the same small model, on the same budget, trained with each loss on a
small-target dataset this script generates, then scored on its held-out test images with
segtool's own evaluation (pixel Dice, lesion-wise Dice, detection F1, each with its 95 %
bootstrap interval over images).

The dataset: grey textured images with a few faint blobs each (every blob 0.1-2 % of the
image), a fifth of the images without any. One foreground class, so the model has one
sigmoid channel. Every loss gets the same seed, split, model (tu-resnet10t with a slim
decoder, weights from scratch), batch size, learning rate and epochs: the table compares
losses on one dataset at one budget, nothing more.

    python benchmarks/loss_study.py [--images 150] [--size 64] [--epochs 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask

#: The losses compared, as ``segtool train --loss`` names them, with the study's labels.
STUDY = {
    "ce": "BCE",
    "dice": "Dice (batch)",
    "dice-squared": "Dice, squared denominator",
    "bce-dice": "BCE + Dice",
    "jaccard": "Jaccard",
    "focal": "focal",
    "tversky": "Tversky",
    "generalized-dice": "generalised Dice",
}
MODEL = {"encoder": "tu-resnet10t", "decoder_channels": "32,16,16,16,16"}


def blob_image(rng: np.random.Generator, size: int, empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask: 2-5 blobs, each 0.1-2 % of the image, unless `empty`."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(0 if empty else int(rng.integers(2, 6))):
        area = rng.uniform(0.001, 0.02) * size * size
        ry = np.sqrt(area / np.pi) * rng.uniform(0.7, 1.3)
        rx = area / np.pi / ry
        cy, cx = rng.uniform(4, size - 4, 2)
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    texture = rng.normal(0, 1, (size // 4, size // 4))
    texture = np.kron(texture, np.ones((4, 4)))[:size, :size] * 18  # blocky clutter
    base = 110 + texture + rng.normal(0, 16, (size, size)) + 38 * mask
    image = np.repeat(base[..., None], 3, axis=2)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_study_dataset(root: Path, n: int, size: int, seed: int = 0) -> dict[str, list[str]]:
    """Write images/, masks/, classes.json and split.json (60 % train, 15 % val, 25 % test)."""
    from PIL import Image

    cmap = make_class_map(["_background_", "blob"])
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    stems = [f"b{i:03d}" for i in range(n)]
    for stem in stems:
        image, mask = blob_image(rng, size, empty=rng.random() < 0.2)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        write_mask(root / "masks" / f"{stem}.png", mask, cmap)
    cmap.save(root / "classes.json")
    n_train, n_val = round(0.6 * n), round(0.15 * n)
    split = {
        "seed": seed,
        "train": stems[:n_train],
        "val": stems[n_train : n_train + n_val],
        "test": stems[n_train + n_val :],
    }
    (root / "split.json").write_text(json.dumps(split))
    return split


def study_one(loss: str, dataset: Path, work: Path, args: argparse.Namespace, test: list[str]):
    """Train with `loss`, predict the test images, score them; the summary's foreground means."""
    from segtool.evaluate.report import evaluate_dirs
    from segtool.predict.folder import predict_dir
    from segtool.train.loop import fit

    start = time.perf_counter()
    run = work / f"run-{loss}"
    fit(
        dataset, run, loss=loss, epochs=args.epochs, batch_size=8, lr=3e-3, augment="light",
        device="cpu", workers=0, seed=0, encoder_weights="none", **MODEL,
    )  # fmt: skip
    predictions = work / f"pred-{loss}"
    predict_dir(run, dataset / "images", predictions, stems=set(test), device="cpu")
    result = evaluate_dirs(
        predictions, dataset / "masks", only=frozenset(test), with_hd95=False, jobs=1,
        lesion_min_size=0, out=work / f"eval-{loss}",
    )  # fmt: skip
    summary = result.summary
    row = {"loss": loss, "seconds": time.perf_counter() - start}
    for key in ("dice", "lesion_dice", "detection_f1"):
        row[key] = summary["mean"].get(key)
        row[f"{key}_ci95"] = summary["mean_ci95"].get(key)
    return row


def _cell(value, ends) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} [{ends[0]:.3f}, {ends[1]:.3f}]" if ends else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--losses", default=",".join(STUDY))
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        dataset = work / "dataset"
        split = make_study_dataset(dataset, args.images, args.size)
        print(
            f"{args.images} images of {args.size}x{args.size} px (train {len(split['train'])}, "
            f"val {len(split['val'])}, test {len(split['test'])}); {args.epochs} epochs of "
            f"batch 8; tu-resnet10t from scratch; lesion-wise with no minimum size (dilation 3)",
            flush=True,
        )
        header = (
            "| loss | pixel Dice [95% CI] | lesion-wise Dice [95% CI] | detection F1 [95% CI] |"
        )
        rows = []
        for loss in args.losses.split(","):
            row = study_one(loss, dataset, work, args, split["test"])
            rows.append(row)
            print(f"{loss}: {row['seconds']:.0f}s", flush=True)
        print(header)
        print("|---|---|---|---|")
        for row in rows:
            cells = [
                _cell(row[k], row[f"{k}_ci95"]) for k in ("dice", "lesion_dice", "detection_f1")
            ]
            print(
                f"| {STUDY.get(row['loss'], row['loss'])} (`{row['loss']}`) | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    main()
