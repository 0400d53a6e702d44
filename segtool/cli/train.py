"""``segtool train``: train a U-Net (or another segmentation-models-pytorch model) on a dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from segtool.cli.common import err, handle_errors, out
from segtool.core.constants import DEVICES
from segtool.train.config import TrainConfig

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


class RichReporter:
    """Draws `fit`'s progress: a bar per epoch, a line per epoch."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:.1f} img/s"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self.task: Any = None

    def start(self, info: dict[str, Any]) -> None:
        amp = f", AMP {str(info['amp']).removeprefix('torch.')}" if info["amp"] else ""
        resumed = f", resuming at epoch {info['start_epoch']}" if info["start_epoch"] > 1 else ""
        err.print(
            f"training on {info['device']}{amp}: {info['train']} train / {info['val']} val images, "
            f"{info['mode']} mode, {info['workers']} loader workers{resumed}",
            highlight=False,
        )

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "", total=batches, epoch=f"{epoch}/{epochs}", loss=0.0, speed=0.0
        )

    def batch(self, done: int, loss: float, images_per_second: float) -> None:
        self.progress.update(self.task, completed=done, loss=loss, speed=images_per_second)

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.remove_task(self.task)
        self.progress.stop()
        per_class = "  ".join(
            f"{k.removeprefix('dice_')} {v:.3f}" for k, v in row.items() if k.startswith("dice_")
        )
        err.print(
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  val Dice {row['val_dice']:.4f}  "
            f"IoU {row['val_iou']:.4f}  ({per_class})  {row['seconds']:.1f}s",
            highlight=False,
        )


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
    ending in the dataclass's default (options left unset stay None: the config decides)."""
    default = getattr(DEFAULTS, name)
    if default is not None and not isinstance(default, bool):
        help = f"{help} \\[default: {default}]"
    return typer.Option(*decls, help=help, rich_help_panel=panel, show_default=False, **kwargs)


def _print_result(result: Any, dataset: Path, out_dir: Path) -> None:
    """The best epoch's validation Dice per class; after Ctrl-C, how to resume."""
    if result.stopped == "interrupted" and result.best_epoch == 0:
        err.print("[yellow]interrupted[/] before the first epoch finished; nothing to resume")
        raise typer.Exit(130)
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{out_dir}: best epoch {result.best_epoch} of {result.epochs_done} "
        f"({result.stopped})"
    )
    table.add_column("class")
    table.add_column("val Dice", justify="right")
    for name, score in result.best_per_class.items():
        table.add_row(name, "—" if score != score else f"{score:.4f}")
    table.add_row("[bold]mean[/]", f"[bold]{result.best_dice:.4f}[/]")
    out.print(table)
    if result.thresholds:
        cuts = result.thresholds["thresholds"]
        err.print(
            "per-class thresholds tuned on the validation split (predict uses them): "
            + ", ".join(f"{escape(name)} {cut:g}" for name, cut in cuts.items())
            + f"; saved in {out_dir}/thresholds.json",
            highlight=False,
        )
    if result.stopped == "interrupted":
        err.print(
            f"[yellow]interrupted[/]: {out_dir}/checkpoints/last.pt holds epoch "
            f"{result.epochs_done}; continue with: "
            f"segtool train {dataset} --out {out_dir} --resume",
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
        int | None,
        _option(
            "size", "Resize images (masks nearest) to SIZE x SIZE. \\[default: no]", DATA, min=8
        ),
    ] = None,
    crop: Annotated[
        int | None,
        _option("crop", "Train on random CROP x CROP patches. \\[default: no]", DATA, min=8),
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

    Example: [bold]segtool train dataset/ --out run/ --encoder resnet18 --size 256 --epochs 40[/]
    """
    from segtool.train.loop import fit

    def value(option: Enum | None) -> str | None:
        return option.value if option is not None else None

    result = fit(
        dataset,
        out_dir,
        resume=resume,
        overwrite=overwrite,
        reporter=RichReporter(),
        val=val,
        test=test,
        split_file=str(split_file) if split_file else None,
        skip_unpaired=skip_unpaired or None,
        regions=regions,
        size=size,
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
    if result.main_process:  # rank 0 alone reports
        _print_result(result, dataset, out_dir)
