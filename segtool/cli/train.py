"""``segtool train``: train a U-Net (or another segmentation-models-pytorch model) on a dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from segtool.cli.common import MaxPixelsOption, err, esc, handle_errors, out, use_max_pixels
from segtool.core.constants import DEVICES
from segtool.train.config import PLANNED, TrainConfig, parse_duration

# Choices come from the same tables the library uses (a test keeps them in sync); they are
# spelled out here so that `segtool --help` need not import torch.
Loss = Enum(
    "Loss",
    {n: n for n in ("dice", "jaccard", "bce-dice", "ce", "focal", "tversky", "lovasz")},
    type=str,
)
Augment = Enum("Augment", {n: n for n in ("none", "light", "strong")}, type=str)
Normalize = Enum("Normalize", {n: n for n in ("imagenet", "image")}, type=str)
Device = Enum("Device", {n: n for n in DEVICES}, type=str)
Axis = Enum("Axis", {n: n for n in ("axial", "coronal", "sagittal")}, type=str)
Resize = Enum("Resize", {n: n for n in ("stretch", "keep")}, type=str)


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


def _option(name: str, help: str, panel: str, *decls: str, **kwargs: Any) -> Any:
    """A typer option for the `TrainConfig` field `name`, in help panel `panel`, its help
    ending in its default: planned (`plan.PLANNED`), else the dataclass's (options left unset
    stay None: the plan or the config decides)."""
    default = getattr(DEFAULTS, name)
    if name in PLANNED:
        help = f"{help} \\[default: planned]"
    elif default is not None and not isinstance(default, bool):
        help = f"{help} \\[default: {default}]"
    return typer.Option(*decls, help=help, rich_help_panel=panel, show_default=False, **kwargs)


def _print_result(result: Any, dataset: Path, out_dir: Path) -> None:
    """The best epoch's validation Dice per class; after Ctrl-C, how to resume."""
    if result.stopped == "interrupted" and not result.kept:
        err.print(
            f"[yellow]interrupted[/]: the new run was not complete and is discarded; "
            f"{esc(out_dir)} is as it was",
            highlight=False,
        )
        raise typer.Exit(130)
    if result.stopped == "interrupted" and result.best_epoch == 0:
        err.print("[yellow]interrupted[/] before the first epoch finished; nothing to resume")
        raise typer.Exit(130)
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{esc(out_dir)}: best epoch {result.best_epoch} of {result.epochs_done} "
        f"({result.stopped})"
    )
    table.add_column("class")
    table.add_column("val Dice", justify="right")
    for name, score in result.best_per_class.items():
        table.add_row(esc(name), "—" if score != score else f"{score:.4f}")
    table.add_row("[bold]mean[/]", f"[bold]{result.best_dice:.4f}[/]")
    out.print(table)
    if result.thresholds:
        cuts = result.thresholds["thresholds"]
        err.print(
            "per-class thresholds tuned on the validation split (predict uses them): "
            + ", ".join(f"{escape(name)} {cut:g}" for name, cut in cuts.items())
            + f"; saved in {esc(out_dir)}/thresholds.json",
            highlight=False,
        )
    if result.stopped == "interrupted":
        err.print(
            f"[yellow]interrupted[/]: {esc(out_dir)}/checkpoints/last.pt holds epoch "
            f"{result.epochs_done}; continue with: "
            f"segtool train {esc(dataset)} --out {esc(out_dir)} --resume",
            highlight=False,
        )
        raise typer.Exit(130)


@handle_errors
def train(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="Dataset folder (images/, masks/, classes.json), or a volume folder "
            "(dataset.json, imagesTr/, labelsTr/: trained on 2-D slices)."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Run folder to write.", rich_help_panel=RUN)
    ],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its last checkpoint.",
            rich_help_panel=RUN,
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out if it exists.", rich_help_panel=RUN)
    ] = False,
    max_pixels: MaxPixelsOption = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Finish the whole run within this time, e.g. 100s, 10m or 2h: the plan "
            "times real steps and sets the epochs (and, where it must, a smaller input).",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only", help="Print the plan and stop (nothing is written).", rich_help_panel=RUN
        ),
    ] = False,
    warm_restart: Annotated[
        bool,
        typer.Option(
            "--warm-restart",
            help="With --resume: warm the learning rate up to its peak again instead of "
            "continuing it smoothly.",
            rich_help_panel=RUN,
        ),
    ] = False,
    val: Annotated[
        float | None, _option("val", "Validation share when no split.json exists.", DATA)
    ] = None,
    test: Annotated[
        float | None, _option("test", "Test share when no split.json exists.", DATA)
    ] = None,
    split_file: Annotated[
        Path | None,
        _option(
            "split_file", "A split.json. \\[default: DATASET/split.json, else a new one]", DATA
        ),
    ] = None,
    skip_unpaired: Annotated[
        bool,
        _option(
            "skip_unpaired", "Skip images without masks and vice versa.", DATA, "--skip-unpaired"
        ),
    ] = False,
    size: Annotated[
        str | None,
        _option("size", "Resize images (masks nearest) into S x S or H,W.", DATA),
    ] = None,
    resize: Annotated[
        Resize | None,
        _option("resize", "stretch to --size, or keep the aspect and pad (ignored).", DATA),
    ] = None,
    crop: Annotated[
        int | None,
        _option("crop", "Train on random CROP x CROP patches.", DATA, min=8),
    ] = None,
    regions: Annotated[
        str | None,
        _option(
            "regions",
            'Learn unions of class ids as overlapping classes, e.g. "whole=1,2,3;core=2,3".',
            DATA,
        ),
    ] = None,
    fg_crop: Annotated[
        float | None, _option("fg_crop", "Share of crops centred on foreground.", DATA)
    ] = None,
    augment: Annotated[Augment | None, _option("augment", "Augmentation preset.", DATA)] = None,
    axis: Annotated[
        Axis | None, _option("axis", "Volumes: slice along this anatomical axis.", DATA)
    ] = None,
    cache: Annotated[
        Path | None,
        _option(
            "cache", "Volumes: slice cache folder, shared by runs. \\[default: RUN/cache]", DATA
        ),
    ] = None,
    normalize: Annotated[
        Normalize | None, _option("normalize", "imagenet statistics or per image.", DATA)
    ] = None,
    arch: Annotated[str | None, _option("arch", "Architecture.", MODEL)] = None,
    encoder: Annotated[
        str | None, _option("encoder", "Encoder (tu-NAME: any timm).", MODEL)
    ] = None,
    encoder_weights: Annotated[
        str | None,
        _option("encoder_weights", "none, imagenet (downloads) or a local weights file.", MODEL),
    ] = None,
    decoder_channels: Annotated[
        str | None,
        _option(
            "decoder_channels",
            "Decoder widths, e.g. 64,32,16,16,16 (smaller is faster). \\[default: the arch's]",
            MODEL,
        ),
    ] = None,
    loss: Annotated[Loss | None, _option("loss", "Loss; see the README's table.", LOSS)] = None,
    bce_weight: Annotated[
        float | None, _option("bce_weight", "bce-dice: weight of the BCE/CE term.", LOSS)
    ] = None,
    dice_weight: Annotated[
        float | None, _option("dice_weight", "bce-dice: weight of the Dice term.", LOSS)
    ] = None,
    tversky_alpha: Annotated[
        float | None, _option("tversky_alpha", "tversky: weight of false positives.", LOSS)
    ] = None,
    tversky_beta: Annotated[
        float | None, _option("tversky_beta", "tversky: weight of false negatives.", LOSS)
    ] = None,
    focal_gamma: Annotated[
        float | None, _option("focal_gamma", "focal: how much easy pixels are down-weighted.", LOSS)
    ] = None,
    epochs: Annotated[int | None, _option("epochs", "Epochs.", OPTIM, min=1)] = None,
    batch_size: Annotated[
        int | None, _option("batch_size", "Images per step.", OPTIM, min=1)
    ] = None,
    lr: Annotated[float | None, _option("lr", "Peak learning rate of AdamW.", OPTIM)] = None,
    weight_decay: Annotated[
        float | None, _option("weight_decay", "AdamW weight decay.", OPTIM)
    ] = None,
    warmup_epochs: Annotated[
        float | None, _option("warmup_epochs", "Epochs of linear LR warm-up.", OPTIM, min=0)
    ] = None,
    clip_grad: Annotated[
        float | None,
        _option("clip_grad", "Clip the gradient norm to this (0: off).", OPTIM, min=0),
    ] = None,
    patience: Annotated[
        int | None,
        _option(
            "patience",
            "Stop after N epochs without a better val Dice. \\[default: never]",
            OPTIM,
            min=1,
        ),
    ] = None,
    seed: Annotated[int | None, _option("seed", "Random seed.", OPTIM)] = None,
    tune_thresholds: Annotated[
        bool,
        _option(
            "tune_thresholds",
            "Multi-label: tune each class's probability cut on the validation split.",
            OPTIM,
            "--tune-thresholds",
        ),
    ] = False,
    device: Annotated[Device | None, _option("device", "Device.", HARDWARE)] = None,
    amp: Annotated[
        bool | None,
        _option("amp", "Mixed precision. \\[default: on CUDA]", HARDWARE, "--amp/--no-amp"),
    ] = None,
    workers: Annotated[
        int | None,
        _option(
            "workers",
            "DataLoader workers. \\[default: picked for the device and its cores]",
            HARDWARE,
            min=0,
        ),
    ] = None,
) -> None:
    """Train a segmentation model and write the run folder.

    The run folder gets model/ (the best model by validation Dice), checkpoints/last.pt,
    metrics.csv, curves.png, config.json, classes.json and split.json. Validation Dice is
    computed every epoch by the same code as segtool evaluate. Ctrl-C stops cleanly;
    --resume continues.

    With no options, segtool plans the run from the dataset and the machine (input size,
    encoder, batch size, augmentation, epochs) and prints the plan: each choice and why.
    Any option you give wins over the plan.

    Example: [bold]segtool train dataset/ --out run/ --time-budget 10m[/]
    """
    import time

    clock = time.monotonic()
    from segtool.cli.train_progress import RichReporter, plan_table
    from segtool.train.loop import fit

    use_max_pixels(max_pixels)

    def value(option: Enum | None) -> str | None:
        return option.value if option is not None else None

    budget = parse_duration(time_budget) if time_budget else None
    options = dict(
        time_budget=budget,
        val=val,
        test=test,
        split_file=str(split_file) if split_file else None,
        skip_unpaired=skip_unpaired or None,
        regions=regions,
        size=size,
        resize=value(resize),
        crop=crop,
        fg_crop=fg_crop,
        augment=value(augment),
        axis=value(axis),
        cache=str(cache) if cache else None,
        normalize=value(normalize),
        arch=arch,
        encoder=encoder,
        encoder_weights=encoder_weights,
        decoder_channels=decoder_channels,
        loss=value(loss),
        bce_weight=bce_weight,
        dice_weight=dice_weight,
        tversky_alpha=tversky_alpha,
        tversky_beta=tversky_beta,
        focal_gamma=focal_gamma,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        clip_grad=clip_grad,
        patience=patience,
        seed=seed,
        tune_thresholds=tune_thresholds or None,
        device=value(device),
        amp=amp,
        workers=workers,
    )
    if plan_only:
        from segtool.train.planning import plan_run

        out.print(plan_table(plan_run(dataset, clock=clock, **options).plan.to_json()))
        return
    reporter = RichReporter(err, budget, started=clock)
    result = fit(
        dataset,
        out_dir,
        resume=resume,
        overwrite=overwrite,
        warm_restart=warm_restart,
        reporter=reporter,
        clock=clock,
        **options,
    )
    if result.main_process:  # rank 0 alone reports
        _print_result(result, dataset, out_dir)
