"""A trained model + images -> label masks (and probabilities, overlays), streamed.

Whole images are padded to the model's stride and cropped back; ``tile`` predicts large
images in overlapping tiles blended with a Gaussian weight; ``tta`` averages flipped
predictions. Reading runs in DataLoader workers and writing in a thread, so the model sets
the pace.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segtool.classes import ClassMap, read_classes_json
from segtool.constants import CLASSES_FILE, IMAGE_SUFFIXES, MASK_SUFFIX, SPLIT_FILE
from segtool.data import normalize, to_model_input
from segtool.errors import SegtoolError
from segtool.images import load_rgb
from segtool.losses import out_channels
from segtool.masks import write_mask
from segtool.model import STRIDE, load_model
from segtool.outdir import prepare_output, publish_output
from segtool.pairs import read_split
from segtool.parallel import default_jobs
from segtool.train import amp_dtype_for, pick_device

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Predictor:
    """A loaded model with what predicting needs to know about its training."""

    model: nn.Module
    class_map: ClassMap
    normalization: str = "imagenet"
    size: int | None = None
    source: Path = Path()
    split: dict | None = None


def _model_classes(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "config.json").read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_predictor(path: Path, classes: Path | None = None) -> Predictor:
    """Load a run folder (``model/``, ``classes.json``, ``config.json``) or a bare
    segmentation-models-pytorch ``save_pretrained`` folder plus a ``classes.json``.

    Raises:
        SegtoolError: no model, no class map, or a class count that does not match the model.
    """
    if (path / "model" / "config.json").is_file():
        folder, run = path / "model", path
    elif (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        folder, run = path, None
    else:
        raise SegtoolError(
            f"{path}: no model here; pass a run folder written by segtool train (with model/) "
            f"or a save_pretrained folder"
        )
    if classes is None and run is not None and (run / CLASSES_FILE).is_file():
        classes = run / CLASSES_FILE
    if classes is None:
        raise SegtoolError(f"{path}: a bare model needs --classes classes.json to name its classes")
    class_map = read_classes_json(classes)
    channels = _model_classes(folder)
    if channels is not None and channels != out_channels(class_map.num_classes):
        raise SegtoolError(
            f"{classes}: {class_map.num_classes} classes need a model with "
            f"{out_channels(class_map.num_classes)} output channel(s), but {folder} has {channels}; "
            f"pass the classes.json the model was trained with"
        )
    options: dict[str, Any] = {}
    split = None
    if run is not None and (run / "config.json").is_file():
        options = json.loads((run / "config.json").read_text()).get("options", {})
        if (run / SPLIT_FILE).is_file():
            split = read_split(run / SPLIT_FILE)
    model = load_model(folder)
    model.eval()
    return Predictor(
        model, class_map, options.get("normalize", "imagenet"), options.get("size"), path, split
    )


def gaussian_weight(size: int, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """A ``size x size`` Gaussian bump (peak 1), the blending weight of one tile."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * (size * sigma_scale) ** 2))
    w = g[:, None] * g[None, :]
    return torch.clamp(w / w.max(), min=1e-3)


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = [*range(0, length - tile, step), length - tile]
    return sorted(set(starts))


class Engine:
    """Runs a predictor on single images: padding, tiles, TTA, probabilities."""

    def __init__(
        self,
        predictor: Predictor,
        device: torch.device,
        *,
        tile: int | None = None,
        overlap: float = 0.25,
        tta: bool = False,
        batch_size: int = 4,
        amp: bool | None = None,
    ) -> None:
        self.p = predictor
        self.device = device
        self.model = predictor.model.to(device)
        self.amp_dtype = amp_dtype_for(device, amp)
        self.tile = None if tile is None else -(-tile // STRIDE) * STRIDE
        if not 0 <= overlap < 1:
            raise SegtoolError(f"--overlap {overlap} must be in [0, 1)")
        self.overlap = overlap
        self.tta = tta
        self.batch_size = batch_size
        self.k = predictor.class_map.num_classes

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, K, H, W)`` (binary models give [1 - p, p]), TTA averaged."""
        views = [(lambda t: t, lambda t: t)]
        if self.tta:
            views += [
                (lambda t: t.flip(-1), lambda t: t.flip(-1)),
                (lambda t: t.flip(-2), lambda t: t.flip(-2)),
            ]
        total = None
        for forward, back in views:
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                logits = self.model(forward(x)).float()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits)
                probs = torch.cat([1 - p, p], dim=1)
            else:
                probs = torch.softmax(logits, dim=1)
            probs = back(probs)
            total = probs if total is None else total + probs
        return total / len(views)

    @torch.no_grad()
    def probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-class probabilities ``(K, H, W)`` for each image (tensors from `normalize`)."""
        if self.p.size is not None:
            return [self._resized(img) for img in images]
        if self.tile is not None:
            return [self._tiled(img) for img in images]
        height = max(i.shape[1] for i in images)
        width = max(i.shape[2] for i in images)
        ph, pw = -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
        # Padded on the device, before normalising (as training's collate pads): the copy to
        # the device stays small and the host does no per-pixel work.
        batch = torch.stack(
            [
                F.pad(
                    img.to(self.device, non_blocking=True),
                    (0, pw - img.shape[2], 0, ph - img.shape[1]),
                )
                for img in images
            ]
        )
        probs = self._forward(to_model_input(batch, self.device))
        return [probs[i, :, : img.shape[1], : img.shape[2]] for i, img in enumerate(images)]

    def _resized(self, img: torch.Tensor) -> torch.Tensor:
        size = self.p.size
        x = to_model_input(img[None], self.device)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        probs = self._forward(x)
        return F.interpolate(probs, size=img.shape[1:], mode="bilinear", align_corners=False)[0]

    def _tiled(self, img: torch.Tensor) -> torch.Tensor:
        tile = self.tile
        assert tile is not None
        _, height, width = img.shape
        ph, pw = max(height, tile), max(width, tile)
        padded = torch.zeros((3, ph, pw), dtype=img.dtype)
        padded[:, :height, :width] = img
        step = max(1, int(tile * (1 - self.overlap)))
        weight = gaussian_weight(tile).to(self.device)
        acc = torch.zeros((self.k, ph, pw), device=self.device)
        norm = torch.zeros((ph, pw), device=self.device)
        spots = [(y, x) for y in _tile_starts(ph, tile, step) for x in _tile_starts(pw, tile, step)]
        for i in range(0, len(spots), self.batch_size):
            chunk = spots[i : i + self.batch_size]
            batch = torch.stack([padded[:, y : y + tile, x : x + tile] for y, x in chunk])
            probs = self._forward(to_model_input(batch, self.device))
            for (y, x), p in zip(chunk, probs, strict=True):
                acc[:, y : y + tile, x : x + tile] += p * weight
                norm[y : y + tile, x : x + tile] += weight
        return (acc / norm)[:, :height, :width]

    def labels(self, probs: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
        """Class ids from probabilities: binary models threshold the foreground probability."""
        if self.k == 2:
            return (probs[1] > threshold).to(torch.uint8).cpu().numpy()
        return probs.argmax(dim=0).cpu().numpy().astype(np.uint16 if self.k > 255 else np.uint8)


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


def split_stems(predictor: Predictor, split: str) -> set[str]:
    """The stems of one split of the run's split.json.

    Raises:
        SegtoolError: the model has no split.json, or the split name is unknown.
    """
    if predictor.split is None:
        raise SegtoolError(f"{predictor.source}: no split.json (not a run folder); drop --split")
    if split not in ("train", "val", "test"):
        raise SegtoolError(f"--split {split!r} is not one of train, val, test")
    return set(predictor.split[split])
