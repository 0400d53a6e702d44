"""A trained model + images -> label masks (and probabilities, overlays), streamed.

Whole images are padded to the model's stride and cropped back; ``tile`` predicts large
images in overlapping tiles blended with a Gaussian weight; ``tta`` averages flipped
predictions. Reading runs in DataLoader workers and writing in a thread, so the model sets
the pace.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from segtool.core.classes import ClassMap
from segtool.core.constants import IMAGE_SUFFIXES, MASK_SUFFIX
from segtool.core.device import pick_device
from segtool.core.errors import SegtoolError
from segtool.core.files import prepare_output, publish_output
from segtool.core.images import load_rgb
from segtool.core.masks import write_mask
from segtool.core.parallel import ProgressFn, default_jobs
from segtool.predict.engine import Engine
from segtool.predict.predictor import Predictor, load_predictor
from segtool.train.data import normalize
from segtool.train.model import STRIDE


class _ImageFiles(Dataset):
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


def _keep_items(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def overlay(
    image: np.ndarray, labels: np.ndarray, class_map: ClassMap, alpha: float = 0.5
) -> Image.Image:
    """The image with each foreground class painted in its colour."""
    palette = np.array(class_map.palette(), dtype=np.uint8).reshape(-1, 3)
    colours = palette[np.clip(labels, 0, 255)]
    fg = (labels > 0) & (labels != class_map.ignore_index)
    out = image.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return Image.fromarray(out.astype(np.uint8))


@dataclass
class PredictReport:
    """What `predict_dir` did."""

    out: Path
    n_images: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Throughput of the whole run."""
        return self.n_images / self.seconds if self.seconds else 0.0


def find_images(folder: Path, stems: set[str] | None = None) -> list[Path]:
    """Image files in `folder` (sorted), optionally only the given stems.

    Raises:
        SegtoolError: no such folder, or no images in it.
    """
    if not folder.is_dir():
        raise SegtoolError(f"{folder}: no such folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if stems is not None:
        paths = [p for p in paths if p.stem in stems]
    if not paths:
        what = "of the selected images " if stems is not None else ""
        raise SegtoolError(
            f"{folder}: no images {what}found ({', '.join(IMAGE_SUFFIXES)}); check the path"
        )
    return paths


def predict_dir(
    model: Path | Predictor,
    images: Path,
    out: Path,
    *,
    classes: Path | None = None,
    stems: set[str] | None = None,
    tile: int | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    threshold: float = 0.5,
    probabilities: bool = False,
    overlay_images: bool = False,
    device: str = "auto",
    batch_size: int = 8,
    amp: bool | None = None,
    workers: int | None = None,
    skip_invalid: bool = False,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> PredictReport:
    """Predict a label mask for every image in a folder.

    Writes ``OUT/<stem>.png`` (palette label masks at each image's size as displayed, as
    rasterize writes them), with `probabilities` also ``OUT/<stem>.npz`` (float16 ``probs``,
    K x H x W), with `overlay_images` ``OUT/overlays/<stem>.jpg``. OUT appears complete or not
    at all.

    Raises:
        SegtoolError: bad model/classes/options, no images, an existing OUT without
            `overwrite`; unreadable images (after the others are written) unless `skip_invalid`.
    """
    predictor = model if isinstance(model, Predictor) else load_predictor(model, classes)
    paths = find_images(images, stems)
    torch_device = pick_device(device)
    engine = Engine(
        predictor, torch_device, tile=tile, overlap=overlap, tta=tta, batch_size=batch_size, amp=amp
    )
    report = PredictReport(out)
    if tile is not None and engine.tile != tile:
        report.notes.append(
            f"--tile {tile} rounded up to {engine.tile}, a multiple of the model stride {STRIDE}"
        )
    if predictor.size is not None and tile is not None:
        report.notes.append(
            f"the model was trained at --size {predictor.size}: images are resized, --tile is unused"
        )
    if workers is None:  # on the CPU the model needs every core; decoding is cheap next to it
        cores = default_jobs()
        workers = 0 if len(paths) <= 8 or torch_device.type == "cpu" else min(8, cores - 1)
    loader = DataLoader(
        _ImageFiles(paths, predictor.normalization),
        batch_size=1 if tile or predictor.size else batch_size,
        num_workers=workers,
        collate_fn=_keep_items,
        pin_memory=False,
    )
    tmp = prepare_output(out, overwrite)
    start = time.perf_counter()
    cmap = predictor.class_map
    try:
        if overlay_images:
            (tmp / "overlays").mkdir()
        # PNG encoding releases the GIL: a few threads keep up with a GPU.
        with ThreadPoolExecutor(max_workers=2 if torch_device.type == "cpu" else 4) as writer:
            pending = []

            def save(
                stem: str, labels: np.ndarray, probs: np.ndarray | None, image: np.ndarray
            ) -> None:
                write_mask(tmp / f"{stem}{MASK_SUFFIX}", labels, cmap, atomic=False)
                if probs is not None:
                    np.savez_compressed(tmp / f"{stem}.npz", probs=probs.astype(np.float16))
                if overlay_images:
                    overlay(image, labels, cmap).save(tmp / "overlays" / f"{stem}.jpg", quality=90)

            done = 0
            for batch in loader:
                good = [item for item in batch if "error" not in item]
                report.failed += [item["error"] for item in batch if "error" in item]
                if good:
                    probs = engine.probabilities([item["input"] for item in good])
                    for item, p in zip(good, probs, strict=True):
                        labels = engine.labels(p, threshold)
                        saved = p.cpu().numpy() if probabilities else None
                        pending.append(
                            writer.submit(save, item["path"].stem, labels, saved, item["image"])
                        )
                report.n_images += len(good)
                done += len(batch)
                if on_progress:
                    on_progress("predict", done, len(paths))
                while len(pending) > 4 * batch_size:
                    pending.pop(0).result()
            for future in pending:
                future.result()
        report.seconds = time.perf_counter() - start
        if report.n_images:
            publish_output(tmp, out)
        else:
            raise SegtoolError(f"{images}: no image could be read: {report.failed[0]}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if report.failed and not skip_invalid:
        raise SegtoolError(
            f"{len(report.failed)} image(s) could not be read and were skipped (the other "
            f"{report.n_images} were written to {out}), e.g. {report.failed[0]}; pass "
            f"--skip-invalid to accept this"
        )
    return report
