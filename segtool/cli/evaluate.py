"""``segtool evaluate``: score predicted label masks against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import err, handle_errors, out, progress_bar, warn


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, title: str) -> None:
    """The results table: one row per foreground class and a mean row."""
    from rich.table import Table

    with_hd95 = "hd95" in summary["mean"]
    table = Table(title=title)
    columns = ["class", "Dice", "IoU", "precision", "recall"] + (["HD95 px"] if with_hd95 else [])
    for column in [*columns, "images with ref."]:
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in summary["per_class"].items():
        cells = [_fmt(row[m]) for m in ("dice", "iou", "precision", "recall")]
        if with_hd95:
            cells.append(_fmt(row["hd95"], 2))
        table.add_row(name, *cells, str(row["images_with_reference"]))
    mean = summary["mean"]
    cells = [_fmt(mean[m]) for m in ("dice", "iou", "precision", "recall")]
    if with_hd95:
        cells.append(_fmt(mean["hd95"], 2))
    table.add_row("[bold]mean[/]", *(f"[bold]{c}[/]" for c in cells), "", end_section=True)
    out.print(table)
    out.print(
        f"pixel accuracy {_fmt(summary['pixel_accuracy'])}; per-image mean Dice "
        f"{_fmt(mean['image_mean_dice'])} over {summary['n_images']} images",
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
    predictions: Annotated[
        Path, typer.Argument(metavar="PRED", help="Folder of predicted PNG masks.")
    ],
    references: Annotated[
        Path,
        typer.Argument(metavar="GT", help="Folder of reference PNG masks (e.g. dataset/masks)."),
    ],
    classes: Annotated[
        Path | None,
        typer.Option(help="classes.json \\[default: the one beside or in GT]."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where summary.json and per_image.csv go \\[default: PRED]."),
    ] = None,
    hd95: Annotated[
        bool, typer.Option("--hd95/--no-hd95", help="Compute HD95 (the slowest metric).")
    ] = True,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Worker processes \\[default: all cores]."),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Score references without a prediction as empty."),
    ] = False,
) -> None:
    """Score predicted label masks against references: Dice, IoU, precision, recall, HD95.

    Writes summary.json and per_image.csv, and prints a table per class.

    Example: [bold]segtool evaluate predictions/ dataset/masks --out report/[/]
    """
    from segtool.evaluate import evaluate_dirs

    with progress_bar() as on_progress:
        result = evaluate_dirs(
            predictions,
            references,
            classes=classes,
            out=out_dir,
            with_hd95=hd95,
            jobs=jobs,
            allow_missing=allow_missing,
            on_progress=on_progress,
        )
    for message in result.warnings:
        warn(message)
    print_summary(
        result.summary, f"{result.summary['n_images']} images: {predictions} vs {references}"
    )
    err.print(f"wrote {result.summary_path} and {result.per_image_path}", highlight=False)
