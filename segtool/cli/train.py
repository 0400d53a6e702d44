from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from segtool.cli.common import (
    err_console,
    finite,
    flag,
    load_torch,
    max_pixels_option,
    note,
    path_arg,
    path_argument,
    path_option,
    refuse_image_options,
    use_max_pixels,
    with_default,
)
from segtool.core.constants import DEVICES
from segtool.train.config import PLANNED, TrainConfig, parse_duration

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
    "axis": Opt(DATA, "Volumes: slice along this anatomical axis.", AXES),
    "cache": Opt(
        DATA, "Volumes: slice cache folder, shared by runs.", Path, "DIR", path_arg,
        to_config=_text, shown="RUN/cache",
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


def _help(name: str, opt: Opt) -> str:
    """The help of the field `name`, ending in its default: planned (`PLANNED`), else what the
    table says, else the dataclass's (none for None and for on/off flags)."""
    default = getattr(DEFAULTS, name)
    if name in PLANNED:
        return with_default(opt.help, "planned")
    if opt.shown is not None:
        return with_default(opt.help, opt.shown)
    if default is None or isinstance(default, bool):
        return opt.help
    return with_default(opt.help, default)


def _parameter(name: str, opt: Opt) -> inspect.Parameter:
    """The typer parameter of the field `name`: unset, it stays None (the plan or the config
    decides)."""
    option = "--" + name.replace("_", "-")
    kind = Literal[opt.kind] if isinstance(opt.kind, tuple) else opt.kind
    if kind is bool and getattr(DEFAULTS, name) is False:  # an on/off flag
        info = flag(option, _help(name, opt), rich_help_panel=opt.panel)
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, info]
        )
    info = typer.Option(
        f"{option}/--no-{option[2:]}" if kind is bool else option,
        help=_help(name, opt),
        rich_help_panel=opt.panel,
        metavar=opt.metavar,
        parser=opt.parser,
        min=opt.min,
        max=opt.max,
        show_default=False,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )


def _run_options(
    dataset: Annotated[
        Path,
        path_argument(
            "DATASET",
            "Dataset folder (images/, masks/, classes.json), or a volume folder "
            "(dataset.json, imagesTr/, labelsTr/: trained on 2-D slices).",
        ),
    ],
    out: Annotated[
        Path, path_option("--out", help="Run folder to write.", metavar="RUN", rich_help_panel=RUN)
    ],
    resume: Annotated[
        bool,
        flag(
            "--resume", "Continue the run in --out from its last checkpoint.", rich_help_panel=RUN
        ),
    ] = False,
    overwrite: Annotated[
        bool, flag("--overwrite", "Replace --out if it exists.", rich_help_panel=RUN)
    ] = False,
    max_pixels: Annotated[int | None, max_pixels_option(rich_help_panel=RUN)] = None,
    plan_only: Annotated[
        bool,
        flag("--plan-only", "Print the plan and stop (nothing is written).", rich_help_panel=RUN),
    ] = False,
) -> None:
    """The options of segtool train that are not the config's (the run's place, its start and
    its stop): the first part of `command`'s signature."""


def command(**given: Any) -> None:
    """Train a segmentation model and write the run folder.

    The run folder gets model/ (the best model by validation Dice), checkpoints/last.pt,
    metrics.csv, curves.png, config.json, classes.json and split.json. Validation Dice is
    computed every epoch (or every --val-every K, and after the last) by the same code as
    segtool evaluate. Ctrl-C stops cleanly; --resume continues.

    With no options, segtool plans the run from the dataset and the machine (input size,
    encoder, batch size, augmentation, epochs) and prints the plan: each choice and why. Any
    option you give wins over the plan.

    example:
      segtool train dataset/ --out run/ --time-budget 10m
    """
    run = {name: given.pop(name) for name in inspect.signature(_run_options).parameters}
    options: dict[str, Any] = {}
    for name, value in given.items():
        convert = OPTIONS[name].to_config
        if value is False:  # an on/off flag not given: unset, as every option not given
            value = None
        options[name] = convert(value) if convert and value is not None else value
    _train(run, options)


command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(_run_options, eval_str=True).parameters.values()
        ),
        *(_parameter(name, opt) for name, opt in OPTIONS.items()),
    ]
)


def _refuse_options(run: dict[str, Any], options: dict[str, Any]) -> bool:
    """Options given for the other kind of dataset are refused, not ignored: a volume folder
    trains on standardised slices (no resize, ImageNet statistics, unpaired files or pixel
    limit), an image dataset has no axis or slice cache. Returns whether it is volumes."""
    from segtool.sources.volume_folder import is_volume_folder

    volumes = is_volume_folder(run["dataset"])
    given = {f"--{name.replace('_', '-')}": options.get(name) is not None for name in options}
    given["--max-pixels"] = run["max_pixels"] is not None
    for_images = ("--size", "--resize", "--normalize", "--skip-unpaired", "--max-pixels")
    names = for_images if volumes else ("--axis", "--cache")
    refuse_image_options(*((n, given.get(n, False)) for n in names), volumes=volumes)
    return volumes


def _train(run: dict[str, Any], options: dict[str, Any]) -> None:
    """Plan and train (or, with --plan-only, print the plan), then print the best epoch."""
    from rich.console import Console

    from segtool.cli import train_progress as shown

    clock = shown.process_start()
    load_torch()
    from segtool.train.loop import fit

    use_max_pixels(run["max_pixels"])
    volumes = _refuse_options(run, options)
    if run["plan_only"]:
        from segtool.train.loop import preview_plan

        planned = preview_plan(run["dataset"], clock=clock, **options)
        Console(soft_wrap=True).print(shown.plan_table(planned.plan.to_json()))
        return
    reporter = shown.RichReporter(err_console(), options["time_budget"], started=clock)
    reporter.items = "cases" if volumes else "images"
    checkpoint = run["out"] / "checkpoints" / "last.pt"
    before = shown.file_stamp(checkpoint)
    try:
        result = fit(
            run["dataset"],
            run["out"],
            resume=run["resume"],
            overwrite=run["overwrite"],
            reporter=reporter,
            clock=clock,
            **options,
        )
    except Exception as exc:
        from segtool.train.steps import NonFiniteLoss

        # An error after this run saved a checkpoint (not the one an --overwrite kept): the
        # run is resumable once the cause is fixed. A NaN loss names its checkpoint itself.
        if not isinstance(exc, NonFiniteLoss) and shown.file_stamp(checkpoint) not in (
            None,
            before,
        ):
            note(f"{run['out']}/checkpoints/last.pt holds the run's last complete step "
                 f"interval; once fixed, continue with: {shown.resume_line(run['dataset'], run['out'])}")  # fmt: skip
        raise
    if result.main_process:  # rank 0 alone reports
        shown.print_result(result, run["dataset"], run["out"])
        _choose_postprocessing(run["out"], run["dataset"], options)


def _choose_postprocessing(out: Path, dataset: Path, options: dict[str, Any]) -> None:
    """Choose the finished run's post-processing on its validation split, and print it."""
    from segtool.cli.common import progress_bar
    from segtool.cli.postprocess_table import print_postprocess
    from segtool.evaluate.postprocess import choose_postprocessing

    with progress_bar() as on_progress:
        choice = choose_postprocessing(
            out, dataset, device=options.get("device") or "auto", on_progress=on_progress
        )
    print_postprocess(choice.document, choice.path)
