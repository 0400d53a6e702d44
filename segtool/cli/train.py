"""``segtool train``: train a U-Net (or another segmentation-models-pytorch model) on a dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from segtool.cli.common import err, handle_errors, out

# Choices come from the same tables the library uses (a test keeps them in sync); they are
# spelled out here so that `segtool --help` need not import torch.
Loss = Enum(
    "Loss",
    {n: n for n in ("dice", "jaccard", "bce-dice", "ce", "focal", "tversky", "lovasz")},
    type=str,
)
Augment = Enum("Augment", {n: n for n in ("none", "light", "strong")}, type=str)
Normalize = Enum("Normalize", {n: n for n in ("imagenet", "image")}, type=str)
Device = Enum("Device", {n: n for n in ("auto", "cpu", "cuda", "mps")}, type=str)


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


@handle_errors
def train(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (images/, masks/, classes.json).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs \\[default: 30].", min=1)] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step \\[default: 8].", min=1)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate of AdamW \\[default: 1e-3].")
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="AdamW weight decay \\[default: 1e-4].")
    ] = None,
    loss: Annotated[
        Loss | None, typer.Option(help="Loss \\[default: bce-dice]; see the README's table.")
    ] = None,
    bce_weight: Annotated[
        float | None, typer.Option(help="bce-dice: weight of the BCE/CE term \\[1].")
    ] = None,
    dice_weight: Annotated[
        float | None, typer.Option(help="bce-dice: weight of the Dice term \\[1].")
    ] = None,
    tversky_alpha: Annotated[
        float | None, typer.Option(help="tversky: weight of false positives \\[0.3].")
    ] = None,
    tversky_beta: Annotated[
        float | None, typer.Option(help="tversky: weight of false negatives \\[0.7].")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture \\[default: unet].")] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder \\[default: resnet34].")] = None,
    encoder_weights: Annotated[
        str | None,
        typer.Option(help="none, imagenet (downloads) or a local weights file \\[none]."),
    ] = None,
    decoder_channels: Annotated[
        str | None,
        typer.Option(
            help="Decoder widths, e.g. 64,32,16,16,16 (smaller is faster) \\[arch default]."
        ),
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Resize images (masks nearest) to SIZE x SIZE.", min=8)
    ] = None,
    crop: Annotated[
        int | None, typer.Option(help="Train on random CROP x CROP patches.", min=8)
    ] = None,
    fg_crop: Annotated[
        float | None, typer.Option(help="Share of crops centred on foreground \\[0.33].")
    ] = None,
    augment: Annotated[
        Augment | None, typer.Option(help="Augmentation preset \\[default: light].")
    ] = None,
    normalize: Annotated[
        Normalize | None, typer.Option(help="imagenet statistics or per image \\[imagenet].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed \\[0].")] = None,
    device: Annotated[Device | None, typer.Option(help="Device \\[default: auto].")] = None,
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="Mixed precision \\[default: on CUDA].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader workers \\[default: cores - 1, max 4].", min=0)
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after N epochs without a better val Dice.", min=1)
    ] = None,
    val: Annotated[
        float | None, typer.Option(help="Validation share when no split.json exists \\[0.15].")
    ] = None,
    test: Annotated[
        float | None, typer.Option(help="Test share when no split.json exists \\[0.15].")
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="A split.json \\[default: DATASET/split.json].")
    ] = None,
    skip_unpaired: Annotated[
        bool, typer.Option("--skip-unpaired", help="Skip images without masks and vice versa.")
    ] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            help='Learn unions of class ids as overlapping classes, e.g. "whole=1,2,3;core=2,3".'
        ),
    ] = None,
    tune_thresholds: Annotated[
        bool,
        typer.Option(
            "--tune-thresholds",
            help="Multi-label: tune each class's probability cut on the validation split.",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out if it exists.")
    ] = False,
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
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        loss=value(loss),
        bce_weight=bce_weight,
        dice_weight=dice_weight,
        tversky_alpha=tversky_alpha,
        tversky_beta=tversky_beta,
        arch=arch,
        encoder=encoder,
        encoder_weights=encoder_weights,
        decoder_channels=decoder_channels,
        size=size,
        crop=crop,
        fg_crop=fg_crop,
        augment=value(augment),
        normalize=value(normalize),
        seed=seed,
        device=value(device),
        amp=amp,
        workers=workers,
        patience=patience,
        val=val,
        test=test,
        split_file=str(split_file) if split_file else None,
        skip_unpaired=skip_unpaired or None,
        regions=regions,
        tune_thresholds=tune_thresholds or None,
    )
    if not result.main_process:
        return  # rank 0 alone reports
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
