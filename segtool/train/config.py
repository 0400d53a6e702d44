"""Every training option in one dataclass, its checks, and what may change on --resume."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from segtool.core.device import DEVICES
from segtool.core.errors import SegtoolError, check_choice
from segtool.split.assign import check_fractions
from segtool.train.data import NORMALIZATIONS
from segtool.train.model import DEFAULT_ARCH, DEFAULT_ENCODER, check_names
from segtool.train.transforms import PRESETS

#: Options that may differ when a run is resumed; any other change would break the run.
RESUMABLE = {"epochs", "patience", "workers", "device", "amp"}


@dataclass
class TrainConfig:
    """Every training option; the command line leaves unset options to these defaults."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0
    loss: str = "bce-dice"
    bce_weight: float | None = None
    dice_weight: float | None = None
    tversky_alpha: float | None = None
    tversky_beta: float | None = None
    focal_gamma: float | None = None
    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str = "none"
    decoder_channels: str | None = None
    size: int | None = None
    crop: int | None = None
    fg_crop: float = 0.33
    augment: str = "light"
    normalize: str = "imagenet"
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    workers: int | None = None
    patience: int | None = None
    val: float = 0.15
    test: float = 0.15
    split_file: str | None = None
    skip_unpaired: bool = False

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from keyword options, dropping the ones that are None (unset)."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown training options: {sorted(unknown)}")
        return cls(**{k: v for k, v in options.items() if v is not None})

    def check(self) -> None:
        """Raise a clear error for a bad option value."""
        from segtool.train.losses import LOSSES

        check_choice("loss", self.loss, LOSSES)
        check_names(self.arch, self.encoder)
        check_choice("augment", self.augment, PRESETS)
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        check_choice("device", self.device, DEVICES)
        if self.size is not None and self.crop is not None:
            raise SegtoolError("--size and --crop exclude each other; pass one")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SegtoolError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.fg_crop <= 1:
            raise SegtoolError(f"--fg-crop {self.fg_crop} must be between 0 and 1")
        check_fractions(self.val, self.test)


def parse_channels(text: str | None) -> tuple[int, ...] | None:
    """``"64,32,16,16,16"`` -> (64, 32, 16, 16, 16)."""
    if text is None:
        return None
    try:
        channels = tuple(int(v) for v in text.split(","))
    except ValueError:
        channels = ()
    if not channels or min(channels) < 1:
        raise SegtoolError(
            f"--decoder-channels {text!r}: give positive integers, e.g. 64,32,16,16,16"
        )
    return channels
