"""``segtool evaluate``: score predicted label masks against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    JobsOption,
    MaxPixelsOption,
    err,
    esc,
    handle_errors,
    out,
    progress_bar,
    use_max_pixels,
    warn,
)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, title: str) -> None:
    """The results table: one row per scored class, the foreground mean and the all-class mean,
    then one line each on what the means cover and what they leave out."""
    from rich.table import Table

    metrics = ("dice", "iou", "precision", "recall")
    with_hd95 = "hd95" in summary["mean"]
    table = Table(title=esc(title))
    unit = summary.get("hd95_unit", "px")
    items = "cases" if summary.get("volumes") else "images"
    # At 80 columns with many classes: numbers never wrap, names fold (never "…": two classes
    # must not look alike).
    table.add_column("class", overflow="fold", min_width=12)
    columns = ["Dice", "IoU", "prec.", "recall"] + ([f"HD95 {unit}"] if with_hd95 else [])
    for column in [*columns, items]:
        table.add_column(column, justify="right", no_wrap=True)
    for name, row in summary["per_class"].items():
        cells = [_fmt(row[m]) for m in metrics]
        if with_hd95:
            cells.append(_fmt(row["hd95"], 2))
        table.add_row(esc(name), *cells, str(row["images_with_reference"]))
    mean, mean_all = summary["mean"], summary.get("mean_all")
    cells = [_fmt(mean[m]) for m in metrics] + ([_fmt(mean["hd95"], 2)] if with_hd95 else [])
    table.add_row("[bold]mean, foreground[/]", *(f"[bold]{c}[/]" for c in cells), "")
    if mean_all is not None:
        cells = [_fmt(mean_all[m]) for m in metrics] + (["—"] if with_hd95 else [])
        table.add_row("mean, all classes (mIoU)", *cells, "", end_section=True)
    out.print(table)
    lines = (
        [
            "multi-label: each class scored as its own binary problem; pixel accuracy counts "
            "pixels whose whole label set is right"
        ]
        if summary.get("multilabel")
        else []
    )
    lines += [
        "Dice, IoU, precision, recall: pixels pooled over all images per class, then averaged "
        "over classes; pixels are ignored only where the reference holds "
        f"{summary.get('ignore_index', 255)}",
        "mean, foreground: " + ", ".join(summary.get("mean_covers", [])),
        "mean, all classes (mIoU): " + ", ".join(summary.get("mean_all_covers", [])),
    ]
    for label, left_out in (
        ("mean, foreground", summary.get("mean_left_out", {})),
        ("mean, all classes", summary.get("mean_all_left_out", {})),
    ):
        for metric, names in left_out.items():
            if names:
                why = "never predicted" if metric == "precision" else "undefined"
                if metric == "recall":
                    why = "absent from every reference"
                elif metric in ("dice", "iou", "image_mean_dice", "hd95"):
                    why = "absent from every prediction and reference"
                lines.append(f"{label} {metric} leaves out ({why}): {', '.join(names)}")
    lines.append(
        f"pixel accuracy {_fmt(summary['pixel_accuracy'])}; per-{items[:-1]} mean Dice "
        f"{_fmt(mean['image_mean_dice'])} (each {items[:-1]}'s Dice, then the mean over {items} "
        f"and foreground classes) over {summary['n_images']} {items}"
    )
    if summary.get("prediction_ignored"):
        lines.append(
            f"{summary['prediction_ignored']} predicted pixels hold the ignore value "
            f"{summary['ignore_index']}: scored as misses of the reference's class"
        )
    for line in lines:
        out.print(line, highlight=False, markup=False)


@handle_errors
def evaluate(
    first: Annotated[
        Path,
        typer.Argument(
            metavar="PRED", help="Folder of predicted PNG masks (with --model: the DATASET)."
        ),
    ],
    references: Annotated[
        Path | None,
        typer.Argument(metavar="[GT]", help="Folder of reference PNG masks (e.g. dataset/masks)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="A run folder: predict the --split of DATASET, then score it."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="With --model on the run's own dataset: test (default), val, all (not train) "
            "or train (by name). Another folder is a separate test set, scored whole."
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(help="classes.json \\[default: the one beside or in GT]."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where the report goes \\[default: PRED, or RUN/evaluation/SPLIT]."
        ),
    ] = None,
    hd95: Annotated[
        bool, typer.Option("--hd95/--no-hd95", help="Compute HD95 (the slowest metric).")
    ] = True,
    gallery: Annotated[
        int, typer.Option(help="Draw the N images with the lowest Dice into OUT/gallery/.", min=0)
    ] = 0,
    jobs: JobsOption = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Score references without a prediction as empty."),
    ] = False,
    device: Annotated[str, typer.Option(help="With --model: auto, cpu, cuda or mps.")] = "auto",
    tta: Annotated[
        bool, typer.Option("--tta", help="With --model: average flipped predictions.")
    ] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            help='Score unions of class ids as overlapping regions, e.g. "whole=1,2,3;core=2,3".'
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace an existing report (and, with --model, predictions)."
        ),
    ] = False,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Score predicted label masks against references: Dice, IoU, precision, recall, HD95.

    Two forms: [bold]segtool evaluate PRED GT[/] scores two folders of masks;
    [bold]segtool evaluate --model RUN DATASET --split test[/] predicts the run's held-out
    split of the dataset first; [bold]segtool evaluate --model RUN OTHER[/] scores all of a
    separate test folder (refused if it holds training images). Writes summary.json and
    per_image.csv, prints a table.

    Example: [bold]segtool evaluate --model run/ dataset/ --gallery 8[/]
    """
    use_max_pixels(max_pixels)
    with progress_bar() as on_progress:
        if model is not None:
            if references is not None:
                raise typer.BadParameter("with --model, pass only the DATASET folder")
            if regions is not None:
                raise typer.BadParameter("with --model, the run's own regions are scored")
            from segtool.evaluate.model import evaluate_model

            result = evaluate_model(
                model,
                first,
                split=split,
                out=out_dir,
                with_hd95=hd95,
                device=device,
                tta=tta,
                gallery=gallery,
                jobs=jobs,
                overwrite=overwrite,
                on_progress=on_progress,
            )
            from segtool.evaluate.separate import trained_on

            source = trained_on(model)
            separate = split is None and (source is None or source.resolve() != first.resolve())
            scope = "the separate test set" if separate else f"the {split or 'test'} split of"
            title = f"{model} on {scope} {first}"
        else:
            if references is None:
                raise typer.BadParameter("pass PRED and GT folders, or --model RUN DATASET")
            from segtool.evaluate.report import evaluate_dirs
            from segtool.evaluate.volumes import evaluate_volume_dirs, holds_volumes

            score = evaluate_volume_dirs if holds_volumes(references) else evaluate_dirs
            result = score(
                first,
                references,
                classes=classes,
                out=out_dir,
                with_hd95=hd95,
                jobs=jobs,
                allow_missing=allow_missing,
                gallery=gallery,
                regions=regions,
                overwrite=overwrite,
                on_progress=on_progress,
            )
            title = f"{first} vs {references}"
    for message in result.warnings:
        warn(message)
    items = "cases" if result.summary.get("volumes") else "images"
    print_summary(result.summary, f"{result.summary['n_images']} {items}: {title}")
    err.print(
        f"wrote {result.summary_path} and {result.per_image_path}", highlight=False, markup=False
    )
    if result.gallery:
        err.print(
            f"gallery of the {len(result.gallery)} lowest-Dice images: "
            f"{result.gallery[0].parent / 'index.html'}",
            highlight=False,
            markup=False,
        )
