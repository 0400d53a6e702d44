"""Running a predictor on images: padding to the stride, resizing, tiles, TTA, probabilities."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np
import torch
import torch.nn.functional as F

from segtool.core.classes import mode_for
from segtool.core.constants import BINARY
from segtool.core.device import amp_dtype_for, autocast
from segtool.core.errors import SegtoolError
from segtool.core.multilabel import value_dtype
from segtool.predict.predictor import Predictor
from segtool.predict.spec import TILE_OVERLAP
from segtool.predict.tiles import predict_tiled
from segtool.train.data import to_model_input
from segtool.train.geometry import scaled_shape
from segtool.train.model import STRIDE


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size an image of `size` is padded to on its own: whole strides."""
    return -(-size[0] // STRIDE) * STRIDE, -(-size[1] // STRIDE) * STRIDE


def _by_key(keys: list[Hashable]) -> list[list[int]]:
    """Indices of `keys` grouped by equal key, in the order of each group's first index."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


class Engine:
    """Runs a predictor on batches of images: padding, resizing, tiles, TTA, probabilities."""

    def __init__(
        self,
        predictor: Predictor,
        device: torch.device,
        *,
        tile: int | None = None,
        overlap: float = TILE_OVERLAP,
        tta: bool = False,
        batch_size: int = 4,
        amp: bool | None = None,
    ) -> None:
        self.p = predictor
        self.device = device
        # The forward function is pluggable: the torch module (moved to the device), or an
        # exported model's runtime, which takes and gives tensors wherever they are.
        model = predictor.model
        #: On a GPU a torch module runs channels_last (cuDNN's fast layout), as training does.
        self.channels_last = device.type == "cuda" and isinstance(model, torch.nn.Module)
        if isinstance(model, torch.nn.Module):
            model = model.to(device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.amp_dtype = amp_dtype_for(device, amp)
        self.tile = None if tile is None else -(-tile // STRIDE) * STRIDE
        if not 0 <= overlap < 1:
            raise SegtoolError(f"--overlap {overlap} must be in [0, 1)")
        self.overlap = overlap
        self.tta = tta
        self.batch_size = batch_size
        self.k = predictor.class_map.num_classes
        self.multilabel = predictor.class_map.multilabel
        self.binary = mode_for(self.k) == BINARY and not self.multilabel
        #: Probability channels: K, or K-1 (one per class) for multi-label models.
        self.channels = self.k - 1 if self.multilabel else self.k

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for a batch, channels_last where the engine runs so, in the
        engine's autocast."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            return self.model(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, K, H, W)`` (binary models give [1 - p, p]; multi-label models
        ``(N, K-1, H, W)``, one sigmoid per class), TTA averaged."""
        views = [(lambda t: t, lambda t: t)]
        if self.tta:
            views += [
                (lambda t: t.flip(-1), lambda t: t.flip(-1)),
                (lambda t: t.flip(-2), lambda t: t.flip(-2)),
            ]
        total = None
        for forward, back in views:
            logits = self._logits(forward(x)).float()
            if self.multilabel:
                probs = torch.sigmoid(logits)
            elif self.binary:
                p = torch.sigmoid(logits)
                probs = torch.cat([1 - p, p], dim=1)
            else:
                probs = torch.softmax(logits, dim=1)
            probs = back(probs)
            total = probs if total is None else total + probs
        return total / len(views)

    def batch_key(self, size: tuple[int, int]) -> Hashable:
        """What images of `size` ``(height, width)`` must share to be predicted in one forward
        pass, each with the mask it gets alone: the model input's padded size (after the
        resize into the training box for a model trained with --size)."""
        if self.p.size is not None:
            size = scaled_shape(size[0], size[1], self.p.size, self.p.resize)
        return padded_size(size)

    @property
    def one_at_a_time(self) -> bool:
        """Whether images go to the model one by one: tiled images (each is its own batch
        of tiles)."""
        return self.tile is not None and self.p.size is None

    @torch.inference_mode()
    def probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-class probabilities ``(K, H, W)`` for each image (tensors from `normalize`).
        Images whose `batch_key` differs go through the model apart, so each image's
        probabilities are those it gets alone."""
        if self.one_at_a_time:
            return [
                predict_tiled(
                    img,
                    self._forward,
                    self.channels,
                    self.tile,
                    self.overlap,
                    self.batch_size,
                    self.device,
                )
                for img in images
            ]
        return self._grouped(images, self._resized if self.p.size is not None else self._whole)

    def _grouped(
        self, images: list[torch.Tensor], step: Callable[[list[torch.Tensor]], list]
    ) -> list:
        """`step` over the images of each `batch_key` apart, results in the images' order."""
        out: list = list(images)
        for group in _by_key([self.batch_key((img.shape[1], img.shape[2])) for img in images]):
            for index, result in zip(group, step([images[i] for i in group]), strict=True):
                out[index] = result
        return out

    def _whole(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Probabilities of whole images of one padded size, in one forward pass."""
        probs = self._forward(self._padded(images))
        return [probs[i, :, : img.shape[1], : img.shape[2]] for i, img in enumerate(images)]

    def _padded(self, images: list[torch.Tensor]) -> torch.Tensor:
        """`images` as one model input on the device, each padded to the batch's size in whole
        strides: on the device, before normalising (as training's collate pads), so the copy
        stays small and the host does no per-pixel work."""
        ph, pw = padded_size((max(i.shape[1] for i in images), max(i.shape[2] for i in images)))
        pads = [(0, pw - img.shape[2], 0, ph - img.shape[1]) for img in images]
        batch = torch.stack(
            [
                F.pad(img.to(self.device, non_blocking=True), pad)
                for img, pad in zip(images, pads, strict=True)
            ]
        )
        return to_model_input(batch, self.device)

    @torch.inference_mode()
    def labels_only(self, images: list[torch.Tensor]) -> list[np.ndarray] | None:
        """Each image's class ids, when a multi-class model predicts without TTA or tiles: for
        whole images the argmax of the logits, which is the probabilities' (softmax keeps the
        order), so no probabilities are computed; for a model trained with --size the argmax
        of the probabilities resized back. The batch's labels come to the host in one copy.
        None where the probabilities are needed (binary and multi-label cuts, TTA, tiles)."""
        if self.binary or self.multilabel or self.tta or self.one_at_a_time:
            return None
        if self.p.size is not None:
            return self._download([p.argmax(dim=0) for p in self.probabilities(images)])
        return self._download(self._grouped(images, self._whole_labels))

    def _whole_labels(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class ids of whole images of one padded size, on the device: the logits' argmax."""
        labels = self._logits(self._padded(images)).argmax(dim=1)
        return [labels[i, : img.shape[1], : img.shape[2]] for i, img in enumerate(images)]

    def _download(self, labels: list[torch.Tensor]) -> list[np.ndarray]:
        """Label maps on the device -> host arrays, in one copy: uint8, or uint16 past 255
        classes."""
        kind = (torch.uint8, np.uint8) if self.k <= 255 else (torch.int32, np.uint16)
        flat = torch.cat([label.reshape(-1) for label in labels]).to(kind[0]).cpu().numpy()
        out, at = [], 0
        for label in labels:
            size = label.numel()
            out.append(flat[at : at + size].reshape(label.shape).astype(kind[1], copy=False))
            at += size
        return out

    def _resized(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Images of one `batch_key` resized into the training box as training did (stretched,
        or aspect kept), each on the device, padded to the stride before normalising (as
        training's collate pads) and predicted in one forward pass; then undone per image:
        the padding cropped and the probabilities resized back to the image's own size."""
        boxes = [scaled_shape(i.shape[1], i.shape[2], self.p.size, self.p.resize) for i in images]
        ph, pw = padded_size(boxes[0])
        batch = []
        for img, (height, width) in zip(images, boxes, strict=True):
            x = img[None].to(self.device, non_blocking=True).float()
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
            if img.dtype == torch.uint8:  # training resizes the 8-bit image itself
                x = x.round().clamp(0, 255).to(torch.uint8)
            batch.append(F.pad(x[0], (0, pw - width, 0, ph - height)))
        probs = self._forward(to_model_input(torch.stack(batch), self.device))
        return [
            F.interpolate(
                p[None, :, :height, :width], size=img.shape[1:], mode="bilinear",
                align_corners=False,
            )[0]
            for p, img, (height, width) in zip(probs, images, boxes, strict=True)
        ]  # fmt: skip

    def labels(self, probs: torch.Tensor, threshold: float | list[float] = 0.5) -> np.ndarray:
        """Class ids from probabilities: binary models threshold the foreground probability;
        multi-label models give bit values, each class cut at its own threshold."""
        if self.multilabel:
            cut = torch.as_tensor(threshold, dtype=probs.dtype, device=probs.device)
            on = probs > cut.reshape(-1, 1, 1)
            bits = torch.arange(self.channels, device=probs.device)
            values = (on.long() << bits[:, None, None]).sum(dim=0)
            return values.cpu().numpy().astype(value_dtype(self.channels))
        if self.binary:
            return (probs[1] > threshold).to(torch.uint8).cpu().numpy()
        return probs.argmax(dim=0).cpu().numpy().astype(np.uint16 if self.k > 255 else np.uint8)
