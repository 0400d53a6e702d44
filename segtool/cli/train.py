"""``segtool train``: train a U-Net (or another segmentation-models-pytorch model) on a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from shlex import quote
from typing import Any

from segtool.cli.common import (
    add_max_pixels,
    bounded,
    err_console,
    note,
    path_arg,
    styled,
    table,
    use_max_pixels,
)
from segtool.core.constants import DEVICES
from segtool.train.config import PLANNED, TrainConfig, parse_duration

# Choices come from the same tables the library uses (a test keeps them in sync); they are
# spelled out here so that `segtool train --help` need not import torch.
LOSSES = ("dice", "jaccard", "bce-dice", "ce", "focal", "tversky", "lovasz")
AUGMENTS = ("none", "light", "strong")
NORMALIZE = ("imagenet", "image")
AXES = ("axial", "coronal", "sagittal")
RESIZE = ("stretch", "keep")

#: Shares (0 to 1) and non-negative amounts (rates, weights); nan and inf are refused.
FRACTION, AMOUNT = bounded(float, 0, 1), bounded(float, 0)

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

HELP = """\
Train a segmentation model and write the run folder.

The run folder gets model/ (the best model by validation Dice), checkpoints/last.pt,
metrics.csv, curves.png, config.json, classes.json and split.json. Validation Dice is computed
every epoch by the same code as segtool evaluate. Ctrl-C stops cleanly; --resume continues.

With no options, segtool plans the run from the dataset and the machine (input size, encoder,
batch size, augmentation, epochs) and prints the plan: each choice and why. Any option you
give wins over the plan.

example:
  segtool train dataset/ --out run/ --time-budget 10m"""


def _option(group: Any, name: str, help: str, **kwargs: Any) -> None:
    """An option for the `TrainConfig` field `name` in help panel `group`, its help ending in
    its default: planned (`plan.PLANNED`), else the dataclass's. Options left unset stay None:
    the plan or the config decides."""
    default = getattr(DEFAULTS, name)
    if name in PLANNED:
        help = f"{help} [default: planned]"
    elif default is not None and not isinstance(default, bool) and "[default" not in help:
        help = f"{help} [default: {default}]"
    flag = "--" + name.replace("_", "-")
    if kwargs.get("action") is None and "choices" not in kwargs and "type" not in kwargs:
        kwargs["type"] = str
    if kwargs.get("type") in (FRACTION, AMOUNT):
        kwargs.setdefault("metavar", "X")
    group.add_argument(flag, dest=name, default=None, help=help, **kwargs)


def _print_result(result: Any, dataset: Path, out_dir: Path) -> None:
    """The best epoch's validation Dice per class; after Ctrl-C, how to resume."""
    interrupted = styled("interrupted", "yellow", sys.stderr)
    if result.stopped == "interrupted" and not result.kept:
        note(
            f"{interrupted}: the new run was not complete and is discarded; {out_dir} is as it was"
        )
        raise SystemExit(130)
    if result.stopped == "interrupted" and result.best_epoch == 0:
        note(f"{interrupted} before the first epoch finished; nothing to resume")
        raise SystemExit(130)
    rows: list = [
        [name, "—" if score != score else f"{score:.4f}"]
        for name, score in result.best_per_class.items()
    ]
    rows += [None, ["mean", f"{result.best_dice:.4f}"]]
    title = f"{out_dir}: best epoch {result.best_epoch} of {result.epochs_done} ({result.stopped})"
    table(title, ["class", "val Dice"], rows)
    if result.thresholds:
        cuts = result.thresholds["thresholds"]
        note(
            "per-class thresholds tuned on the validation split (predict uses them): "
            + ", ".join(f"{name} {cut:g}" for name, cut in cuts.items())
            + f"; saved in {out_dir}/thresholds.json"
        )
    if result.stopped == "interrupted":
        note(
            f"{interrupted}: {out_dir}/checkpoints/last.pt holds epoch {result.epochs_done}; "
            f"continue with: segtool train {quote(str(dataset))} --out {quote(str(out_dir))} "
            "--resume"
        )
        raise SystemExit(130)


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``segtool train``, in its help panels."""
    parser.usage = "%(prog)s DATASET --out RUN [options]"
    parser.add_argument(
        "dataset",
        type=path_arg,
        metavar="DATASET",
        help="Dataset folder (images/, masks/, classes.json), or a volume folder "
        "(dataset.json, imagesTr/, labelsTr/: trained on 2-D slices).",
    )
    run, data, model, loss, optim, hardware = (parser.add_argument_group(p) for p in PANELS)
    _run_options(run)
    _data_options(data)
    _model_options(model, loss)
    _optimisation_options(optim, hardware)


def _run_options(run: Any) -> None:
    """The Run panel: where the run goes, and how it starts and stops."""
    run.add_argument(
        "--out",
        dest="out_dir",
        type=path_arg,
        required=True,
        metavar="RUN",
        help="Run folder to write.",
    )
    run.add_argument(
        "--resume", action="store_true", help="Continue the run in --out from its last checkpoint."
    )
    run.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    add_max_pixels(run)
    run.add_argument(
        "--time-budget",
        metavar="TIME",
        help="Finish the whole run within this time, e.g. 100s, 10m or 2h: the plan times real "
        "steps and sets the epochs (and, where it must, a smaller input).",
    )
    run.add_argument(
        "--plan-only", action="store_true", help="Print the plan and stop (nothing is written)."
    )
    run.add_argument(
        "--warm-restart",
        action="store_true",
        help="With --resume: warm the learning rate up to its peak again instead of continuing "
        "it smoothly.",
    )


def _data_options(data: Any) -> None:
    """The Data panel: which images, at which size, augmented how."""
    # Shares are checked together (with their sum) by the library, as split's are.
    _option(data, "val", "Validation share when no split.json exists.", type=float, metavar="X")
    _option(data, "test", "Test share when no split.json exists.", type=float, metavar="X")
    _option(
        data,
        "split_file",
        "A split.json. [default: DATASET/split.json, else a new one]",
        type=path_arg,
        metavar="FILE",
    )
    _option(data, "skip_unpaired", "Skip images without masks and vice versa.", action="store_true")
    _option(data, "size", "Resize images (masks nearest) into S x S or H,W.", metavar="SIZE")
    _option(
        data, "resize", "stretch to --size, or keep the aspect and pad (ignored).", choices=RESIZE
    )
    _option(
        data, "crop", "Train on random CROP x CROP patches.", type=bounded(int, 8), metavar="CROP"
    )
    _option(
        data,
        "regions",
        'Learn unions of class ids as overlapping classes, e.g. "whole=1,2,3;core=2,3".',
        metavar="REGIONS",
    )
    _option(data, "fg_crop", "Share of crops centred on foreground.", type=FRACTION)
    _option(data, "augment", "Augmentation preset.", choices=AUGMENTS)
    _option(data, "axis", "Volumes: slice along this anatomical axis.", choices=AXES)
    _option(
        data,
        "cache",
        "Volumes: slice cache folder, shared by runs. [default: RUN/cache]",
        type=path_arg,
        metavar="DIR",
    )
    _option(data, "normalize", "imagenet statistics or per image.", choices=NORMALIZE)


def _model_options(model: Any, loss: Any) -> None:
    """The Model and Loss panels."""
    _option(model, "arch", "Architecture.", metavar="NAME")
    _option(model, "encoder", "Encoder (tu-NAME: any timm).", metavar="NAME")
    _option(
        model,
        "encoder_weights",
        "none, imagenet (downloads) or a local weights file.",
        metavar="WEIGHTS",
    )
    _option(
        model,
        "decoder_channels",
        "Decoder widths, e.g. 64,32,16,16,16 (smaller is faster).",
        metavar="WIDTHS",
    )
    _option(loss, "loss", "Loss; see the README's table.", choices=LOSSES)
    _option(loss, "bce_weight", "bce-dice: weight of the BCE/CE term.", type=AMOUNT)
    _option(loss, "dice_weight", "bce-dice: weight of the Dice term.", type=AMOUNT)
    _option(loss, "tversky_alpha", "tversky: weight of false positives.", type=AMOUNT)
    _option(loss, "tversky_beta", "tversky: weight of false negatives.", type=AMOUNT)
    _option(loss, "focal_gamma", "focal: how much easy pixels are down-weighted.", type=AMOUNT)


def _optimisation_options(optim: Any, hardware: Any) -> None:
    """The Optimisation and Hardware panels."""
    _option(optim, "epochs", "Epochs.", type=bounded(int, 1), metavar="N")
    _option(optim, "batch_size", "Images per step.", type=bounded(int, 1), metavar="N")
    _option(optim, "lr", "Peak learning rate of AdamW.", type=AMOUNT)
    _option(optim, "weight_decay", "AdamW weight decay.", type=AMOUNT)
    _option(optim, "warmup_epochs", "Epochs of linear LR warm-up.", type=AMOUNT, metavar="N")
    _option(optim, "clip_grad", "Clip the gradient norm to this (0: off).", type=AMOUNT)
    _option(
        optim,
        "patience",
        "Stop after N epochs without a better val Dice. [default: never]",
        type=bounded(int, 1),
        metavar="N",
    )
    _option(optim, "seed", "Random seed.", type=bounded(int, 0, 2**32 - 1))
    _option(
        optim,
        "tune_thresholds",
        "Multi-label: tune each class's probability cut on the validation split.",
        action="store_true",
    )
    _option(hardware, "device", "Device.", choices=DEVICES)
    _option(
        hardware,
        "amp",
        "Mixed precision. [default: on CUDA]",
        action=argparse.BooleanOptionalAction,
    )
    _option(
        hardware,
        "workers",
        "DataLoader workers. [default: picked for the device and its cores]",
        type=bounded(int, 0),
        metavar="N",
    )


def run(args: argparse.Namespace) -> None:
    """Plan and train (or, with --plan-only, print the plan), then print the best epoch."""
    import time
    from dataclasses import fields

    clock = time.monotonic()
    from rich.console import Console

    from segtool.cli.train_progress import RichReporter, plan_table
    from segtool.train.loop import fit

    use_max_pixels(args.max_pixels)
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    budget = parse_duration(args.time_budget) if args.time_budget else None
    options["time_budget"] = budget
    for name in ("split_file", "cache"):  # the config holds paths as text (config.json)
        options[name] = str(options[name]) if options[name] is not None else None
    if args.plan_only:
        from segtool.train.planning import plan_run

        planned = plan_run(args.dataset, clock=clock, **options)
        Console(soft_wrap=True).print(plan_table(planned.plan.to_json()))
        return
    reporter = RichReporter(err_console(), budget, started=clock)
    result = fit(
        args.dataset,
        args.out_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        warm_restart=args.warm_restart,
        reporter=reporter,
        clock=clock,
        **options,
    )
    if result.main_process:  # rank 0 alone reports
        _print_result(result, args.dataset, args.out_dir)
