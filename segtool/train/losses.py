"""The one loss module: a table of losses over segmentation-models-pytorch, one factory.

Every loss takes logits ``(N, C, H, W)`` (C = 1 in binary mode) and an integer target
``(N, H, W)`` holding class ids and the ignore value, and ignores the ignore pixels. In
multi-label mode (C = K-1 sigmoid channels) the target holds bit values
(`segtool.core.multilabel`); `MultilabelTargets` turns them into one 0/1 target per channel
and leaves the ignore pixels out of every channel before segmentation-models-pytorch's
``MULTILABEL_MODE`` loss sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segtool.core.constants import BINARY, MULTICLASS, MULTILABEL
from segtool.core.errors import SegtoolError, check_choice
from segtool.train.config import TrainConfig

#: The loss options' defaults are TrainConfig's (one place for the library and the CLI).
_DEFAULT = TrainConfig()


class MaskedBCE(nn.Module):
    """Binary cross-entropy with logits, averaged over the pixels that are not ignored."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.reshape(target.shape)
        valid = target != self.ignore_index
        # Weighted rather than gathered (logits[valid]): a gather reads the number of valid
        # pixels back from the device, a wait on every step. No valid pixel: 0.
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, (target * valid).to(logits.dtype), reduction="none"
        )
        return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


class MultilabelTargets(nn.Module):
    """Bit-value targets -> per-channel 0/1 targets, with the ignore pixels left out of every
    channel, for a loss built in ``multilabel`` mode without an ignore value.

    The pixels that count are gathered into logits and targets of shape ``(1, C, P, 1)``, so
    losses that sum over the batch and the pixels (Dice, Jaccard, Tversky, BCE, focal,
    Lovász hinge) see exactly the non-ignored pixels of each channel.
    """

    def __init__(self, loss: nn.Module, ignore_bit: int) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_bit = ignore_bit

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = logits.shape[1]
        valid = (target & self.ignore_bit) == 0  # (N, H, W)
        if not valid.any():
            return logits.sum() * 0.0
        bits = torch.arange(channels, device=target.device)
        planes = (target[:, None] >> bits[None, :, None, None]) & 1  # (N, C, H, W)
        y_pred = logits.permute(1, 0, 2, 3)[:, valid]  # (C, P)
        y_true = planes.permute(1, 0, 2, 3)[:, valid].to(logits.dtype)
        return self.loss(y_pred[None, ..., None], y_true[None, ..., None])


class Weighted(nn.Module):
    """A weighted sum of losses (e.g. BCE + Dice)."""

    def __init__(self, parts: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList(m for _, m in parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.parts, strict=True))


def _dice(mode: str, ignore: int, **_: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode, ignore_index=ignore, from_logits=True)


def _jaccard(mode: str, ignore: int, **_: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import JaccardLoss

    return JaccardLoss(mode, ignore_index=ignore, from_logits=True)


def _ce(mode: str, ignore: int, **_: Any) -> nn.Module:
    if mode == MULTILABEL:
        return nn.BCEWithLogitsLoss()  # ignore pixels are gathered away by MultilabelTargets
    return MaskedBCE(ignore) if mode == BINARY else nn.CrossEntropyLoss(ignore_index=ignore)


def _bce_dice(
    mode: str,
    ignore: int,
    bce_weight: float = _DEFAULT.bce_weight,
    dice_weight: float = _DEFAULT.dice_weight,
    **_: Any,
) -> nn.Module:
    return Weighted([(bce_weight, _ce(mode, ignore)), (dice_weight, _dice(mode, ignore))])


def _focal(
    mode: str, ignore: int, focal_gamma: float = _DEFAULT.focal_gamma, **_: Any
) -> nn.Module:
    from segmentation_models_pytorch.losses import FocalLoss

    return FocalLoss(mode, gamma=focal_gamma, ignore_index=ignore)


def _tversky(
    mode: str,
    ignore: int,
    tversky_alpha: float = _DEFAULT.tversky_alpha,
    tversky_beta: float = _DEFAULT.tversky_beta,
    **_: Any,
) -> nn.Module:
    from segmentation_models_pytorch.losses import TverskyLoss

    return TverskyLoss(
        mode, alpha=tversky_alpha, beta=tversky_beta, ignore_index=ignore, from_logits=True
    )


def _lovasz(mode: str, ignore: int, **_: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import LovaszLoss

    return LovaszLoss(mode, ignore_index=ignore, from_logits=True)


@dataclass(frozen=True)
class LossSpec:
    """One row of the loss table."""

    build: Callable[..., nn.Module]
    modes: tuple[str, ...]
    summary: str


#: Loss name -> how to build it, which modes it supports, and when to choose it.
LOSSES: dict[str, LossSpec] = {
    "dice": LossSpec(
        _dice, (BINARY, MULTICLASS, MULTILABEL), "soft Dice; copes with small foregrounds"
    ),
    "jaccard": LossSpec(
        _jaccard, (BINARY, MULTICLASS, MULTILABEL), "soft IoU; like Dice, optimises IoU"
    ),
    "bce-dice": LossSpec(
        _bce_dice,
        (BINARY, MULTICLASS, MULTILABEL),
        "BCE (binary, multi-label) or cross-entropy + Dice; a robust default",
    ),
    "ce": LossSpec(
        _ce, (BINARY, MULTICLASS, MULTILABEL), "BCE (binary, multi-label) or cross-entropy alone"
    ),
    "focal": LossSpec(
        _focal, (BINARY, MULTICLASS, MULTILABEL), "focal loss; down-weights easy pixels"
    ),
    "tversky": LossSpec(
        _tversky,
        (BINARY, MULTICLASS, MULTILABEL),
        "Tversky; alpha/beta trade false positives for false negatives",
    ),
    "lovasz": LossSpec(
        _lovasz, (BINARY, MULTICLASS, MULTILABEL), "Lovász hinge/softmax; directly optimises IoU"
    ),
}


def build_loss(name: str, mode: str, ignore_index: int, **options: Any) -> nn.Module:
    """Build a loss by name for a mode (``binary``, ``multiclass`` or ``multilabel``).

    Args:
        name: a key of `LOSSES`.
        mode: ``binary`` (one logit channel, targets 0/1), ``multiclass``, or ``multilabel``
            (one sigmoid channel per foreground class, bit-value targets).
        ignore_index: target value whose pixels contribute nothing (multi-label: the ignore
            bit).
        **options: ``bce_weight``, ``dice_weight``, ``tversky_alpha``, ``tversky_beta``,
            ``focal_gamma``; None values are dropped so defaults live in one place.

    Raises:
        SegtoolError: unknown name or a mode the loss does not support.
    """
    check_choice("loss", name, LOSSES)
    spec = LOSSES[name]
    if mode not in spec.modes:
        raise SegtoolError(
            f"--loss {name} does not support {mode} mode; use one of {', '.join(LOSSES)}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    if mode == MULTILABEL:
        return MultilabelTargets(spec.build(mode, None, **given), ignore_index)
    return spec.build(mode, ignore_index, **given)
