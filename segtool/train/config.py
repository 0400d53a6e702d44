"""Every training option in one frozen, typed dataclass: parsed once from what users type,
checked, and what may change on --resume.

`TrainConfig` holds real values (``size`` a (height, width) pair, ``decoder_channels`` a
tuple, ``time_budget`` seconds, paths as paths): building one parses each option once, from
text (``"256,448"``, ``"10m"``) or from the value itself, so no other module parses them
again. `Given` is what the user set, which the plan respects; config.json and ``last.pt``
keep `TrainConfig.to_json`, which `TrainConfig.from_json` reads back.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from segtool.core.classes import ClassMap
from segtool.core.constants import DEVICES
from segtool.core.errors import SegtoolError, check_choice

#: segtool's default architecture and encoder.
DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "resnet34"
#: Options that may differ when a run is resumed; any other change would break the run.
RESUMABLE = frozenset(
    ("epochs", "patience", "workers", "device", "amp", "tune_thresholds", "time_budget",
     "warm_restart", "val_every", "compile", "decoded")
)  # fmt: skip
#: Options that hold for one invocation only: a resumed run gets the ones given now, if any.
PER_INVOCATION = {"time_budget": None, "warm_restart": False}

#: The options the plan chooses when they are not given.
PLANNED = frozenset(
    ("size", "resize", "crop", "fg_crop", "encoder", "decoder_channels", "batch_size",
     "augment", "augment_on", "lr", "epochs", "loss", "oversample", "val_every", "decoded",
     "epoch_steps")
)  # fmt: skip


#: Where the decoded images are kept (`segtool.train.decoded`): RAM, a memory-mapped file, or
#: nowhere (decoded every epoch).
DECODED_MODES = ("ram", "disk", "off")

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


def parse_duration(text: str | float) -> float:
    """``--time-budget``: ``100s``, ``10m``, ``2h``, ``1h30m``, plain seconds, or a number of
    seconds -> seconds.

    Raises:
        SegtoolError: not a positive duration.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
        if not seconds > 0:  # also NaN
            raise SegtoolError(f"--time-budget {text}: give a positive time")
        return seconds
    units = {"h": 3600, "m": 60, "s": 1, "": 1}
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?[hms]\s*)+|\d+(?:\.\d+)?)\s*", str(text))
    seconds = 0.0
    if parts:
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)([hms]?)", str(text)):
            seconds += float(number) * units[unit]
    if seconds <= 0:
        raise SegtoolError(f"--time-budget {text!r}: give a duration such as 100s, 10m or 2h")
    return seconds


def _numbers(text: Any, kind: type) -> tuple:
    """``"1,2,3"`` or a list -> a tuple of `kind`; () when a value does not parse."""
    try:
        values = text.split(",") if isinstance(text, str) else list(text)
        return tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        return ()


def parse_channels(text: Any) -> tuple[int, ...] | None:
    """``"64,32,16,16,16"`` (or a list of widths) -> (64, 32, 16, 16, 16).

    Raises:
        SegtoolError: not positive integers.
    """
    if text is None:
        return None
    channels = _numbers(text, int)
    if not channels or min(channels) < 1:
        raise SegtoolError(
            f"--decoder-channels {text!r}: give positive integers, e.g. 64,32,16,16,16"
        )
    return channels


def parse_class_weights(text: Any) -> str | tuple[float, ...] | None:
    """``--class-weights``: ``auto`` (median frequency balancing over the training split), or
    one weight per class, background first (``"0.5,1,4"`` or a list) -> "auto" or a tuple.

    Raises:
        SegtoolError: not ``auto`` nor finite weights, 0 or more, one of them above 0.
    """
    if text is None or text == "auto":
        return text
    weights = _numbers(text, float)
    if not weights or not all(0 <= w < math.inf for w in weights) or not any(weights):
        raise SegtoolError(
            f"--class-weights {text!r}: give auto, or one weight per class (0 or more, "
            f"background first), e.g. 0.5,1,4"
        )
    return weights


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:  # the defaults (the CLI's help builds them) stay free of numpy
        return None
    from segtool.train.geometry import parse_size

    return parse_size(value)


def _budget(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


#: How each option that users type as text becomes its value (applied once, on building).
PARSERS = {
    "size": _size,
    "class_weights": parse_class_weights,
    "decoder_channels": parse_channels,
    "time_budget": _budget,
    "split_file": _path,
    "cache": _path,
}


@dataclass(frozen=True)
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
    class_weights: str | tuple[float, ...] | None = None  #: "auto", or one per class
    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str = "none"
    decoder_channels: tuple[int, ...] | None = None
    size: tuple[int, int] | None = None
    resize: str = "stretch"
    crop: int | None = None
    fg_crop: float = 0.33
    oversample: float = 0.0  #: share of whole-image draws from images holding a rare class
    augment: str = "light"
    augment_on: str = "cpu"  #: albumentations in the loader, or batches on the device
    normalize: str = "imagenet"
    seed: int = 0
    axis: str = "axial"
    cache: Path | None = None
    decoded: str | None = None  #: "ram", "disk" or "off"; None: `decoded.choose_decoded` decides
    device: str = "auto"
    amp: bool | None = None
    workers: int | None = None
    patience: int | None = None
    val_every: int = 1  #: validate every k epochs (and always after the last)
    epoch_steps: int | None = None  #: steps an epoch; None (or 0): one pass over the training split
    val: float = 0.15
    test: float = 0.15
    split_file: Path | None = None
    fold: int | None = None
    skip_unpaired: bool = False
    regions: str | None = None
    tune_thresholds: bool = False
    time_budget: float | None = None  #: seconds
    warm_restart: bool = False
    compile: bool = False  #: torch.compile the model that trains

    def __post_init__(self) -> None:
        # Parsed once, here: whatever built the config (the command line's text, Python
        # values, config.json's lists), every later reader gets the typed value.
        for name, parse in PARSERS.items():
            object.__setattr__(self, name, parse(getattr(self, name)))

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from keyword options, dropping the ones that are None (unset).

        Raises:
            TypeError: an option `TrainConfig` does not have.
            SegtoolError: a value that does not parse.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown training options: {sorted(unknown)}")
        return cls(**{k: v for k, v in options.items() if v is not None})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrainConfig:
        """Read back `to_json` (config.json's ``options``, ``last.pt``'s ``config``); options
        an older segtool wrote and this one lacks are left out."""
        known = {f.name for f in fields(cls)}
        return cls.from_options(**{k: v for k, v in doc.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        """Plain values for JSON and ``last.pt``: tuples as lists, paths as text."""
        doc = asdict(self)
        for name, value in doc.items():
            if isinstance(value, tuple):
                doc[name] = list(value)
            elif isinstance(value, Path):
                doc[name] = str(value)
        return doc

    def with_options(self, **options: Any) -> TrainConfig:
        """A copy with `options` replaced (each parsed as on building)."""
        return replace(self, **options)

    @property
    def train_share(self) -> float:
        """The share of the images a new split trains on (what --val and --test leave)."""
        return 1.0 - self.val - self.test

    def check(self) -> None:
        """Raise a clear error for a bad number, fraction or device (names that choose a loss,
        model, augmentation or normalisation are checked against their tables by
        `segtool.train.build.check_config`)."""
        from segtool.split.assign import check_fractions
        from segtool.train.geometry import RESIZE_MODES

        check_choice("device", self.device, DEVICES)
        check_choice("resize", self.resize, RESIZE_MODES)
        if self.decoded is not None:
            check_choice("decoded", self.decoded, DECODED_MODES)
        if self.size is not None and self.crop is not None:
            raise SegtoolError("--size and --crop exclude each other; pass one")
        if self.size is None and self.resize != "stretch":
            raise SegtoolError(f"--resize {self.resize} needs --size S or --size H,W")
        for name in ("epochs", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise SegtoolError(f"--{name.replace('_', '-')} must be at least 1")
        if self.epoch_steps is not None and self.epoch_steps < 0:
            raise SegtoolError(f"--epoch-steps {self.epoch_steps}: give 1 or more (0: one pass)")
        for name in ("fg_crop", "oversample"):
            if not 0 <= getattr(self, name) <= 1:
                raise SegtoolError(
                    f"--{name.replace('_', '-')} {getattr(self, name)} must be between 0 and 1"
                )
        for name in AMOUNTS:
            value = getattr(self, name)
            if not 0 <= value < math.inf:  # also false for NaN
                raise SegtoolError(
                    f"--{name.replace('_', '-')} {value}: give a finite number, 0 or more"
                )
        check_fractions(self.val, self.test)


@dataclass(frozen=True)
class Given:
    """The options a user set, parsed: the plan chooses the others (or leaves them to
    `TrainConfig`'s defaults) and shows these as "given"."""

    config: TrainConfig = field(default_factory=TrainConfig)
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, **options: Any) -> Given:
        """The options given as keywords (None: not given), each parsed once.

        Raises:
            TypeError: an option `TrainConfig` does not have.
            SegtoolError: a value that does not parse.
        """
        config = TrainConfig.from_options(**options)
        return cls(config, frozenset(k for k, v in options.items() if v is not None))

    def get(self, name: str) -> Any:
        """The value given for `name`, or None when it was not given."""
        return getattr(self.config, name) if name in self.names else None

    def over(self, planned: dict[str, Any]) -> TrainConfig:
        """The config: the given options over the `planned` ones over the defaults."""
        return replace(self.config, **{k: v for k, v in planned.items() if k not in self.names})


def resume_config(
    out: Path, given: Given, state: dict[str, Any], class_map: ClassMap
) -> TrainConfig:
    """The config of a resumed run: the checkpoint's own, with the `RESUMABLE` options the
    user gave.

    Raises:
        SegtoolError: another option differs from the run's, or the dataset's classes do.
    """
    saved = TrainConfig.from_json(state["config"])
    changed = sorted(
        k for k in given.names - RESUMABLE if getattr(saved, k) != getattr(given.config, k)
    )
    if changed:
        value = getattr(saved, changed[0])
        shown = str(value) if isinstance(value, Path) else value
        raise SegtoolError(
            f"--resume continues {out} with its own settings; --{changed[0].replace('_', '-')} "
            f"differs from the run's ({shown!r}); only "
            f"{', '.join(sorted(RESUMABLE))} may change"
        )
    if list(state["class_names"]) != list(class_map.names):
        raise SegtoolError(
            f"{out}: the checkpoint was trained on classes {list(state['class_names'])}, but the "
            f"dataset has {list(class_map.names)}; start a new run (--overwrite or another --out)"
        )
    now = {k: given.get(k) for k in given.names & RESUMABLE}
    return replace(saved, **{**PER_INVOCATION, **now})
