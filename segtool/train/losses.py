"""The one loss module: a table of losses over segmentation-models-pytorch, one factory.

Every loss takes logits ``(N, C, H, W)`` (C = 1 in binary mode) and an integer target
``(N, H, W)`` holding class ids and the ignore value, and ignores the ignore pixels. In
multi-label mode (C = K-1 sigmoid channels) the target holds bit values
(`segtool.core.multilabel`); `MultilabelTargets` turns them into one 0/1 target per channel
and leaves the ignore pixels out of every channel before segmentation-models-pytorch's
``MULTILABEL_MODE`` loss sees them.

The Dice family written here (`SoftDice`: per-image, squared-denominator, generalised and
log-cosh Dice) follows one empty-foreground policy, `EMPTY_POLICY`, the one
segmentation-models-pytorch's ``DiceLoss`` (segtool's ``dice``) follows: a class with no
reference pixel in the unit a term is summed over (an image, or the whole batch) adds 0 to the
loss and still counts in the mean over classes (generalised Dice: it carries no weight), so a
batch with no foreground at all gives 0, with a zero gradient. False positives on such images
are left to the cross-entropy term (``bce-dice``) or, in the batch forms, to the other images'
sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segtool.core.classes import ClassMap
from segtool.core.constants import BINARY, MULTICLASS, MULTILABEL
from segtool.core.errors import SegtoolError, check_choice
from segtool.train.config import TrainConfig

#: The loss options' defaults are TrainConfig's (one place for the library and the CLI).
_DEFAULT = TrainConfig()


class MaskedBCE(nn.Module):
    """Binary cross-entropy with logits over the pixels that are not ignored: their mean, or
    with ``class_weights`` (background, foreground) their weighted mean, Σ w·bce / Σ w, as
    torch's ``CrossEntropyLoss`` takes a weighted mean."""

    def __init__(self, ignore_index: int, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.class_weights = class_weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.reshape(target.shape)
        valid = target != self.ignore_index
        # Weighted rather than gathered (logits[valid]): a gather reads the number of valid
        # pixels back from the device, a wait on every step. No valid pixel: 0.
        truth = (target * valid).long()
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, truth.to(logits.dtype), reduction="none"
        )
        weights = valid.to(logits.dtype)
        if self.class_weights is not None:
            weights = weights * self.class_weights.to(logits.device, logits.dtype)[truth]
        return (per_pixel * weights).sum() / weights.sum().clamp(min=EPS)


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


#: The Dice family's empty-foreground rule (module docstring), by name.
EMPTY_POLICY = "absent-scores-zero"
#: Below this, a Dice denominator is taken as this (segmentation-models-pytorch's eps).
EPS = 1e-7


class SoftDice(nn.Module):
    """Soft Dice and its variants over probabilities p and one-hot references g, summed over
    the pixels that are not ignored.

    Args:
        mode: ``binary`` (one sigmoid channel), ``multiclass`` (softmax over K channels, every
            class a term, background included) or ``multilabel`` (sigmoid channels, 0/1
            targets from `MultilabelTargets`).
        ignore_index: target value left out (None in multi-label mode).
        per_image: one Dice per image and class, averaged over images (else the batch Dice
            of nnU-Net: sums over the batch and the pixels, one term per class).
        squared: the V-Net denominator Σp² + Σg² instead of Σp + Σg.
        generalized: Sudre et al. 2017: one term, 1 - 2 Σ_c w_c Σpg / Σ_c w_c Σ(p + g),
            w_c = 1 / (Σg_c)².
        log_cosh: log(cosh(loss)) of the whole loss (Jadon 2020).
    """

    def __init__(
        self,
        mode: str,
        ignore_index: int | None,
        *,
        per_image: bool = False,
        squared: bool = False,
        generalized: bool = False,
        log_cosh: bool = False,
    ) -> None:
        super().__init__()
        self.mode, self.ignore_index = mode, ignore_index
        self.per_image, self.squared = per_image, squared
        self.generalized, self.log_cosh = generalized, log_cosh

    def _planes(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(p, g), each (N, C, pixels), zero at ignored pixels."""
        n, c = logits.shape[:2]
        logits = logits.reshape(n, c, -1)
        target = target.reshape(n, 1, -1)
        if self.mode == MULTILABEL:  # bit values, the ignore bit left out of every channel
            valid = ((target & self.ignore_index) == 0).to(logits.dtype)
            bits = torch.arange(c, device=target.device).view(1, c, 1)
            return torch.sigmoid(logits) * valid, ((target >> bits) & 1) * valid
        valid = (target != self.ignore_index).to(logits.dtype)
        if self.mode == BINARY:
            return torch.sigmoid(logits) * valid, (target == 1).to(logits.dtype)
        ids = torch.arange(c, device=target.device).view(1, c, 1)
        return torch.softmax(logits, 1) * valid, (target == ids).to(logits.dtype)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = self._planes(logits, target)
        dims = (2,) if self.per_image else (0, 2)  # sums per (image, class) or per class
        overlap = (p * g).sum(dims)
        size = (p * p if self.squared else p).sum(dims) + g.sum(dims)
        present = g.sum(dims) > 0
        if self.generalized:
            weight = torch.where(present, 1 / g.sum(dims).clamp_min(1) ** 2, 0.0)
            score = 2 * (weight * overlap).sum(-1) / (weight * size).sum(-1).clamp_min(EPS)
            loss = ((1 - score) * present.any(-1)).mean()
        else:
            loss = ((1 - 2 * overlap / size.clamp_min(EPS)) * present).mean()
        return torch.log(torch.cosh(loss)) if self.log_cosh else loss


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


def _ce(
    mode: str, ignore: int, class_weights: tuple[float, ...] | None = None, **_: Any
) -> nn.Module:
    if mode == MULTILABEL:
        return nn.BCEWithLogitsLoss()  # ignore pixels are gathered away by MultilabelTargets
    weights = None if class_weights is None else torch.tensor(class_weights)
    if mode == BINARY:
        return MaskedBCE(ignore, weights)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore)


def _bce_dice(
    mode: str,
    ignore: int,
    bce_weight: float = _DEFAULT.bce_weight,
    dice_weight: float = _DEFAULT.dice_weight,
    class_weights: tuple[float, ...] | None = None,
    **_: Any,
) -> nn.Module:
    cross_entropy = _ce(mode, ignore, class_weights)
    return Weighted([(bce_weight, cross_entropy), (dice_weight, _dice(mode, ignore))])


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
    #: takes multi-label bit values itself (else `MultilabelTargets` gathers them)
    bits: bool = False


def _variant(summary: str, **flags: bool) -> LossSpec:
    """The table row of a `SoftDice` variant: every mode, bit-value targets taken as they are."""

    def build(mode: str, ignore: int | None, **_: Any) -> nn.Module:
        return SoftDice(mode, ignore, **flags)

    return LossSpec(build, (BINARY, MULTICLASS, MULTILABEL), summary, bits=True)


#: Loss name -> how to build it, which modes it supports, and when to choose it.
LOSSES: dict[str, LossSpec] = {
    "dice": LossSpec(
        _dice,
        (BINARY, MULTICLASS, MULTILABEL),
        "soft Dice summed over the batch (nnU-Net's batch Dice); copes with small foregrounds",
    ),
    "dice-image": _variant(
        "soft Dice per image, averaged (dice sums over the batch, as nnU-Net's batch Dice)",
        per_image=True,
    ),
    "dice-squared": _variant("soft Dice with the V-Net denominator Σp² + Σg²", squared=True),
    "generalized-dice": _variant(
        "generalised Dice (Sudre 2017): classes weighted by 1/(Σg)²; for rare classes",
        generalized=True,
    ),
    "log-cosh-dice": _variant("log(cosh(Dice loss)) (Jadon 2020)", log_cosh=True),
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
            ``focal_gamma``, ``class_weights`` (one per class, for `WEIGHTED` losses); None
            values are dropped so defaults live in one place.

    Raises:
        SegtoolError: unknown name or a mode the loss does not support.
    """
    check_choice("loss", name, LOSSES)
    spec = LOSSES[name]
    if mode not in spec.modes:
        fits = ", ".join(k for k, v in LOSSES.items() if mode in v.modes)
        raise SegtoolError(f"--loss {name} does not support {mode} mode; use one of {fits}")
    given = {k: v for k, v in options.items() if v is not None}
    if mode == MULTILABEL and not spec.bits:
        return MultilabelTargets(spec.build(mode, None, **given), ignore_index)
    return spec.build(mode, ignore_index, **given)


#: The losses --class-weights weighs: the cross-entropy family (bce-dice: its CE term).
WEIGHTED = ("ce", "bce-dice")


def check_class_weights(loss: str, weights: Any, class_map: ClassMap) -> None:
    """Refuse class weights the run cannot use: with a loss outside `WEIGHTED`, for
    overlapping (multi-label) classes, or not one weight per class.

    Raises:
        SegtoolError: one line naming the value and the fix.
    """
    if weights is None:
        return
    if loss not in WEIGHTED:
        raise SegtoolError(
            f"--class-weights weighs the cross-entropy terms of {', '.join(WEIGHTED)}; "
            f"--loss {loss} has none (choose one of those, or drop --class-weights)"
        )
    if class_map.multilabel:
        raise SegtoolError(
            "--class-weights weighs exclusive classes; this run's classes overlap "
            "(multi-label): drop --class-weights"
        )
    k = class_map.num_classes
    if weights != "auto" and len(weights) != k:
        names = ", ".join(class_map.names)
        raise SegtoolError(
            f"--class-weights {','.join(f'{w:g}' for w in weights)}: {len(weights)} weights "
            f"for {k} classes ({names}); give one per class, background first"
        )
