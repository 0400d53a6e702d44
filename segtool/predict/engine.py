"""Running a predictor on images: padding to the stride, resizing, tiles, TTA, probabilities."""

from __future__ import annotations

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


class Engine:
    """Runs a predictor on single images: padding, tiles, TTA, probabilities."""

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

    @torch.inference_mode()
    def probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-class probabilities ``(K, H, W)`` for each image (tensors from `normalize`)."""
        if self.p.size is not None:
            return [self._resized(img) for img in images]
        if self.tile is not None:
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
        probs = self._forward(self._padded(images))
        return [probs[i, :, : img.shape[1], : img.shape[2]] for i, img in enumerate(images)]

    def _padded(self, images: list[torch.Tensor]) -> torch.Tensor:
        """`images` as one model input on the device, each padded to the batch's size in whole
        strides: on the device, before normalising (as training's collate pads), so the copy
        stays small and the host does no per-pixel work."""
        height = max(i.shape[1] for i in images)
        width = max(i.shape[2] for i in images)
        ph, pw = -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
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
        """Each image's class ids straight from the logits, when a multi-class model predicts
        whole images: the argmax of the logits is the probabilities' (softmax keeps the
        order), so no probabilities are computed, and the batch's labels come to the host in
        one copy. None where the probabilities are needed (binary and multi-label cuts, TTA,
        tiles, a model trained at --size)."""
        if self.binary or self.multilabel or self.tta or self.tile or self.p.size is not None:
            return None
        logits = self._logits(self._padded(images))
        kind = (torch.uint8, np.uint8) if self.k <= 255 else (torch.int32, np.uint16)
        labels = logits.argmax(dim=1).to(kind[0]).cpu().numpy()
        return [
            np.ascontiguousarray(labels[i, : img.shape[1], : img.shape[2]]).astype(
                kind[1], copy=False
            )
            for i, img in enumerate(images)
        ]

    def _resized(self, img: torch.Tensor) -> torch.Tensor:
        """Resize into the training box as training did (stretched, or aspect kept), pad to the
        stride before normalising (as training's collate pads), predict, then undo it: crop
        the padding and resize back to the image's own size."""
        height, width = scaled_shape(img.shape[1], img.shape[2], self.p.size, self.p.resize)
        x = img[None].to(self.device).float()
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        if img.dtype == torch.uint8:  # training resizes the 8-bit image itself
            x = x.round().clamp(0, 255).to(torch.uint8)
        ph, pw = -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE
        x = to_model_input(F.pad(x, (0, pw - width, 0, ph - height)), self.device)
        probs = self._forward(x)[:, :, :height, :width]
        return F.interpolate(probs, size=img.shape[1:], mode="bilinear", align_corners=False)[0]

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
