"""``segtool evaluate``: score predicted label masks against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import JobsOption, err, handle_errors, out, progress_bar, warn


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, title: str) -> None:
    """The results table: one row per foreground class and a mean row."""
    from rich.markup import escape
    from rich.table import Table

    with_hd95 = "hd95" in summary["mean"]
    table = Table(title=title)
    unit = summary.get("hd95_unit", "px")
    items = "cases" if summary.get("volumes") else "images"
    # At 80 columns with many classes: numbers never wrap, names fold (never "…": two classes
    # must not look alike).
    table.add_column("class", overflow="fold", min_width=12)
    columns = ["Dice", "IoU", "prec.", "recall"] + ([f"HD95 {unit}"] if with_hd95 else [])
    for column in [*columns, items]:
        table.add_column(column, justify="right", no_wrap=True)
    for name, row in summary["per_class"].items():
        cells = [_fmt(row[m]) for m in ("dice", "iou", "precision", "recall")]
        if with_hd95:
            cells.append(_fmt(row["hd95"], 2))
        table.add_row(escape(name), *cells, str(row["images_with_reference"]))
    mean = summary["mean"]
    cells = [_fmt(mean[m]) for m in ("dice", "iou", "precision", "recall")]
    if with_hd95:
        cells.append(_fmt(mean["hd95"], 2))
    table.add_row("[bold]mean[/]", *(f"[bold]{c}[/]" for c in cells), "", end_section=True)
    out.print(table)
    if summary.get("multilabel"):
        out.print(
            "multi-label: each class scored as its own binary problem; pixel accuracy counts "
            "pixels whose whole label set is right",
            highlight=False,
        )
    out.print(
        f"pixel accuracy {_fmt(summary['pixel_accuracy'])}; per-{items[:-1]} mean Dice "
        f"{_fmt(mean['image_mean_dice'])} over {summary['n_images']} {items}",
        highlight=False,
    )
    if summary["mean_excludes"]:
        out.print(
            "left out of the mean (absent from every prediction and reference): "
            + ", ".join(summary["mean_excludes"]),
            highlight=False,
        )


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
) -> None:
    """Score predicted label masks against references: Dice, IoU, precision, recall, HD95.

    Two forms: [bold]segtool evaluate PRED GT[/] scores two folders of masks;
    [bold]segtool evaluate --model RUN DATASET --split test[/] predicts the run's held-out
    split of the dataset first; [bold]segtool evaluate --model RUN OTHER[/] scores all of a
    separate test folder (refused if it holds training images). Writes summary.json and
    per_image.csv, prints a table.

    Example: [bold]segtool evaluate --model run/ dataset/ --gallery 8[/]
    """
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

            if holds_volumes(references):
                if gallery:
                    raise typer.BadParameter("--gallery draws images, not volumes (yet)")
                result = evaluate_volume_dirs(
                    first,
                    references,
                    classes=classes,
                    out=out_dir,
                    with_hd95=hd95,
                    jobs=jobs,
                    allow_missing=allow_missing,
                    regions=regions,
                    on_progress=on_progress,
                )
            else:
                result = evaluate_dirs(
                    first,
                    references,
                    classes=classes,
                    out=out_dir,
                    with_hd95=hd95,
                    jobs=jobs,
                    allow_missing=allow_missing,
                    gallery=gallery,
                    regions=regions,
                    on_progress=on_progress,
                )
            title = f"{first} vs {references}"
    for message in result.warnings:
        warn(message)
    items = "cases" if result.summary.get("volumes") else "images"
    print_summary(result.summary, f"{result.summary['n_images']} {items}: {title}")
    err.print(f"wrote {result.summary_path} and {result.per_image_path}", highlight=False)
    if result.gallery:
        err.print(
            f"gallery of the {len(result.gallery)} lowest-Dice images: "
            f"{result.gallery[0].parent / 'index.html'}",
            highlight=False,
        )
