"""`segtool train`'s options: one entry per `TrainConfig` field (its help panel, help, type
or parser; the default shown is the dataclass's, or "planned"), which `segtool.cli.train`
turns into typer parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segtool.cli.common import finite, path_arg
from segtool.core.constants import DEVICES
from segtool.train.config import DECODED_MODES, TrainConfig, parse_duration

# Choices come from the same tables the library uses (a test keeps them in sync); they are
# spelled out here so that `segtool train --help` need not import torch.
LOSSES = (
    "dice", "dice-image", "dice-squared", "generalized-dice", "log-cosh-dice", "jaccard",
    "bce-dice", "ce", "focal", "tversky", "lovasz",
)  # fmt: skip
AUGMENTS = ("none", "light", "strong")
NORMALIZE = ("imagenet", "image")
AXES = ("axial", "coronal", "sagittal")
RESIZE = ("stretch", "keep")
DECODED = DECODED_MODES
AUGMENT_ON = ("cpu", "device")

#: Shares (0 to 1) and non-negative amounts (rates, weights); nan and inf are refused.
FRACTION, AMOUNT = finite(0, 1), finite(0)

#: Every option shows the default of the config dataclass itself: no default is typed twice.
DEFAULTS = TrainConfig()
#: The help panels of segtool train --help, in the order they are shown.
PANELS = RUN, DATA, MODEL, LOSS, OPTIM, HARDWARE = (
    "Run",
    "Data",
    "Model",
    "Loss",
    "Optimisation",
    "Hardware",
)


@dataclass(frozen=True)
class Opt:
    """How one `TrainConfig` field is given on the command line: its help panel and text, the
    type typer reads (``str`` unless said), a parser or a range, and how the value read
    becomes the config's (`to_config`; by default as it is). The option's name is the field's,
    its default the dataclass's (or ``planned``): neither is written here."""

    panel: str
    help: str
    kind: Any = str
    metavar: str | None = None
    parser: Callable[[str], Any] | None = None
    min: int | None = None
    max: int | None = None
    to_config: Callable[[Any], Any] | None = None
    shown: str | None = None  # the default to show, where the dataclass's None means more


def _text(value: Path | None) -> str | None:
    """A path option as the config holds it: text (config.json)."""
    return None if value is None else str(value)


#: Every TrainConfig field, once: ``--name`` of segtool train (a test keeps the two in step).
OPTIONS: dict[str, Opt] = {
    "time_budget": Opt(
        RUN,
        "Finish the whole run within this time, e.g. 100s, 10m or 2h: the plan times real "
        "steps and sets the epochs (and, where it must, a smaller input).",
        metavar="TIME",
        to_config=parse_duration,
    ),
    "warm_restart": Opt(
        RUN,
        "With --resume: warm the learning rate up to its peak again instead of continuing "
        "it smoothly.",
        bool,
    ),
    # Shares are checked together (with their sum) by the library, as split's are.
    "val": Opt(DATA, "Validation share when no split.json exists.", float, "X"),
    "test": Opt(DATA, "Test share when no split.json exists.", float, "X"),
    "split_file": Opt(
        DATA, "A split.json.", Path, "FILE", path_arg, to_config=_text,
        shown="DATASET/split.json, else a new one",
    ),
    "fold": Opt(
        DATA,
        "Train on the other folds of a split made with segtool split --folds K, validate on "
        "fold k (0 to K-1).",
        int,
        "k",
        min=0,
    ),
    "skip_unpaired": Opt(DATA, "Skip images without masks and vice versa.", bool),
    "size": Opt(DATA, "Resize images (masks nearest) into S x S or H,W.", metavar="SIZE"),
    "resize": Opt(DATA, "stretch to --size, or keep the aspect and pad (ignored).", RESIZE),
    "crop": Opt(DATA, "Train on random CROP x CROP patches.", int, "CROP", min=8),
    "regions": Opt(
        DATA,
        'Learn unions of class ids as overlapping classes, e.g. "whole=1,2,3;core=2,3".',
        metavar="REGIONS",
    ),
    "fg_crop": Opt(DATA, "Share of crops centred on foreground.", float, "X", FRACTION),
    "oversample": Opt(
        DATA,
        "Whole images: share of draws from images holding a rare class (0: off).",
        float,
        "X",
        FRACTION,
    ),
    "augment": Opt(DATA, "Augmentation preset.", AUGMENTS),
    "augment_on": Opt(
        DATA,
        "Augment each sample in the loader (cpu, albumentations) or whole batches on the "
        "device, in the training step (device: flips, affine, brightness/contrast, noise).",
        AUGMENT_ON,
    ),
    "axis": Opt(DATA, "Volumes: slice along this anatomical axis.", AXES),
    "cache": Opt(
        DATA, "Cache folder (volume slices; decoded images with --decoded disk), shared by runs.", Path, "DIR", path_arg,
        to_config=_text, shown="RUN/cache",
    ),
    "decoded": Opt(
        DATA,
        "Decode the images once and keep them in ram, in a memory-mapped file in the cache "
        "folder (disk), or decode them every epoch (off).",
        DECODED,
    ),
    "normalize": Opt(DATA, "imagenet statistics or per image.", NORMALIZE),
    "arch": Opt(MODEL, "Architecture.", metavar="NAME"),
    "encoder": Opt(MODEL, "Encoder (tu-NAME: any timm).", metavar="NAME"),
    "encoder_weights": Opt(
        MODEL, "none, imagenet (downloads) or a local weights file.", metavar="WEIGHTS"
    ),
    "decoder_channels": Opt(
        MODEL, "Decoder widths, e.g. 64,32,16,16,16 (smaller is faster).", metavar="WIDTHS"
    ),
    "loss": Opt(LOSS, "Loss; the table in docs/train.md#losses.", LOSSES),
    "bce_weight": Opt(LOSS, "bce-dice: weight of the BCE/CE term.", float, "X", AMOUNT),
    "dice_weight": Opt(LOSS, "bce-dice: weight of the Dice term.", float, "X", AMOUNT),
    "tversky_alpha": Opt(LOSS, "tversky: weight of false positives.", float, "X", AMOUNT),
    "tversky_beta": Opt(LOSS, "tversky: weight of false negatives.", float, "X", AMOUNT),
    "class_weights": Opt(
        LOSS,
        "ce, bce-dice: weight of each class's pixels, background first (e.g. 0.5,1,4), or "
        "auto: median frequency over the training split.",
        metavar="auto|W,W,..",
        shown="none",
    ),
    "focal_gamma": Opt(LOSS, "focal: how much easy pixels are down-weighted.", float, "X", AMOUNT),
    "epochs": Opt(OPTIM, "Epochs.", int, "N", min=1),
    "epoch_steps": Opt(
        OPTIM, "Steps an epoch, from successive shuffled passes over the training images "
        "(0: one pass; the plan: 250 on a GPU where one pass is shorter).", int, "N", min=0,
    ),
    "batch_size": Opt(OPTIM, "Images per step.", int, "N", min=1),
    "lr": Opt(OPTIM, "Peak learning rate of AdamW.", float, "X", AMOUNT),
    "weight_decay": Opt(OPTIM, "AdamW weight decay.", float, "X", AMOUNT),
    "warmup_epochs": Opt(OPTIM, "Epochs of linear LR warm-up.", float, "N", AMOUNT),
    "clip_grad": Opt(OPTIM, "Clip the gradient norm to this (0: off).", float, "X", AMOUNT),
    "patience": Opt(
        OPTIM, "Stop after N validations without a better val Dice.", int, "N", min=1,
        shown="never",
    ),
    "val_every": Opt(
        OPTIM, "Validate every K epochs and after the last (the plan: near a tenth of the "
        "time).", int, "K", min=1,
    ),
    "seed": Opt(OPTIM, "Random seed.", int, min=0, max=2**32 - 1),
    "tune_thresholds": Opt(
        OPTIM, "Multi-label: tune each class's probability cut on the validation split.", bool
    ),
    "device": Opt(HARDWARE, "Device.", DEVICES),
    "amp": Opt(HARDWARE, "Mixed precision.", bool, shown="on CUDA"),
    "workers": Opt(
        HARDWARE, "DataLoader workers.", int, "N", min=0,
        shown="picked for the device and its cores",
    ),
    "compile": Opt(
        HARDWARE, "torch.compile the model: a slow first step, faster ones after.", bool
    ),
}  # fmt: skip
