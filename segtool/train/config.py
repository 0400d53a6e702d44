"""Every training option in one dataclass, its checks, and what may change on --resume."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from segtool.core.classes import ClassMap
from segtool.core.constants import DEVICES
from segtool.core.errors import SegtoolError, check_choice

#: segtool's default architecture and encoder.
DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "resnet34"
#: Options that may differ when a run is resumed; any other change would break the run.
RESUMABLE = {"epochs", "patience", "workers", "device", "amp", "tune_thresholds", "time_budget"}

#: The options the plan chooses when they are not given.
PLANNED = frozenset(
    ("size", "resize", "crop", "fg_crop", "encoder", "decoder_channels", "batch_size",
     "augment", "lr", "epochs", "loss")
)  # fmt: skip


#: Options that are amounts: finite, and 0 or more (`TrainConfig.check`).
AMOUNTS = (
    "lr",
    "weight_decay",
    "warmup_epochs",
    "clip_grad",
    "bce_weight",
    "dice_weight",
    "tversky_alpha",
    "tversky_beta",
    "focal_gamma",
)


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
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    focal_gamma: float = 2.0
    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str = "none"
    decoder_channels: str | None = None
    size: str | None = None
    resize: str = "stretch"
    crop: int | None = None
    fg_crop: float = 0.33
    augment: str = "light"
    normalize: str = "imagenet"
    seed: int = 0
    axis: str = "axial"
    cache: str | None = None
    device: str = "auto"
    amp: bool | None = None
    workers: int | None = None
    patience: int | None = None
    val: float = 0.15
    test: float = 0.15
    split_file: str | None = None
    skip_unpaired: bool = False
    regions: str | None = None
    tune_thresholds: bool = False
    time_budget: float | None = None

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from keyword options, dropping the ones that are None (unset)."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown training options: {sorted(unknown)}")
        return cls(**{k: v for k, v in options.items() if v is not None})

    def check(self) -> None:
        """Raise a clear error for a bad number, fraction or device (names that choose a loss,
        model, augmentation or normalisation are checked against their tables by
        `segtool.train.build.check_config`)."""
        from segtool.split.assign import check_fractions
        from segtool.train.geometry import RESIZE_MODES, parse_size

        check_choice("device", self.device, DEVICES)
        check_choice("resize", self.resize, RESIZE_MODES)
        if self.size is not None and self.crop is not None:
            raise SegtoolError("--size and --crop exclude each other; pass one")
        if parse_size(self.size) is None and self.resize != "stretch":
            raise SegtoolError(f"--resize {self.resize} needs --size S or --size H,W")
        if self.time_budget is not None and self.time_budget <= 0:
            raise SegtoolError(f"--time-budget {self.time_budget}: give a positive time")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SegtoolError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.fg_crop <= 1:
            raise SegtoolError(f"--fg-crop {self.fg_crop} must be between 0 and 1")
        for name in AMOUNTS:
            value = getattr(self, name)
            if not 0 <= value < math.inf:  # also false for NaN
                raise SegtoolError(
                    f"--{name.replace('_', '-')} {value}: give a finite number, 0 or more"
                )
        check_fractions(self.val, self.test)


def parse_duration(text: str) -> float:
    """``--time-budget``: ``100s``, ``10m``, ``2h``, ``1h30m`` or plain seconds -> seconds.

    Raises:
        SegtoolError: not a positive duration.
    """
    import re

    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?[hms]\s*)+|\d+(?:\.\d+)?)\s*", text)
    seconds = 0.0
    if parts:
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)([hms]?)", text):
            seconds += float(number) * units[unit]
    if seconds <= 0:
        raise SegtoolError(f"--time-budget {text!r}: give a duration such as 100s, 10m or 2h")
    return seconds


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


def resume_config(
    out: Path, given: dict[str, Any], state: dict[str, Any], class_map: ClassMap
) -> TrainConfig:
    """The config of a resumed run: the checkpoint's own, with the `RESUMABLE` options the
    user gave.

    Raises:
        SegtoolError: another option differs from the run's, or the dataset's classes do.
    """
    saved = dict(state["config"])
    changed = sorted(
        k for k, v in given.items() if v is not None and k not in RESUMABLE and saved.get(k) != v
    )
    if changed:
        raise SegtoolError(
            f"--resume continues {out} with its own settings; --{changed[0].replace('_', '-')} "
            f"differs from the run's ({saved.get(changed[0])!r}); only "
            f"{', '.join(sorted(RESUMABLE))} may change"
        )
    if list(state["class_names"]) != list(class_map.names):
        raise SegtoolError(
            f"{out}: the checkpoint was trained on classes {list(state['class_names'])}, but the "
            f"dataset has {list(class_map.names)}; start a new run (--overwrite or another --out)"
        )
    # A time budget is for one invocation: a resumed run gets the one given now, if any.
    saved["time_budget"] = None
    saved.update({k: v for k, v in given.items() if v is not None and k in RESUMABLE})
    return TrainConfig.from_options(**saved)
