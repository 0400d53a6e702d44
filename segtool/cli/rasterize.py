"""``segtool rasterize``: labelme JSON annotations -> a dataset of PNG label masks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import JobsOption, err, handle_errors, out, progress_bar, warn


class ImageMode(str, Enum):
    """How original images reach ``dataset/images``."""

    copy = "copy"
    link = "link"
    none = "none"


@handle_errors
def rasterize(
    annotations: Annotated[
        Path, typer.Argument(help="Folder of labelme JSON files (searched recursively).")
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder to write.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="labelme labels.txt or a classes.json; default: derived and printed."
        ),
    ] = None,
    images: Annotated[
        ImageMode, typer.Option(help="Copy, hard-link or leave out the original images.")
    ] = ImageMode.copy,
    jobs: JobsOption = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Convert valid files; list the rest in the report."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
) -> None:
    """Rasterize labelme polygons into PNG label masks, pixel-identical to labelme2voc.

    Writes OUT/images/, OUT/masks/<stem>.png, OUT/classes.json and OUT/rasterize_report.json.

    Example: [bold]segtool rasterize annotations/ dataset/ --labels labels.txt[/]
    """
    from rich.table import Table

    from segtool.rasterize.folder import rasterize_dir

    with progress_bar() as on_progress:
        report = rasterize_dir(
            annotations,
            out_dir,
            labels=labels,
            images=images.value,
            jobs=jobs,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    doc = report.to_json()
    if labels is None:
        ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
        err.print(f"class map derived from the annotations: {ids}", highlight=False)
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    for message in report.warnings[:10]:
        warn(message)
    if len(report.warnings) > 10:
        warn(f"{len(report.warnings) - 10} more warnings in {out_dir}/rasterize_report.json")

    table = Table(title=f"{report.n_images} masks written to {out_dir}")
    for column in ("id", "class", "shapes", "pixels", "pixel share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in doc["classes"].items():
        table.add_row(
            str(row["id"]),
            name,
            str(row["shapes"]),
            str(row["pixels"]),
            f"{row['pixel_share']:.2%}",
        )
    ignore = doc["ignore"]
    if ignore["shapes"]:
        table.add_row(
            str(ignore["value"]), "(ignore)", str(ignore["shapes"]), str(ignore["pixels"]), ""
        )
    out.print(table)
    if report.skipped:
        out.print(
            f"{len(report.skipped)} invalid file(s) skipped; see {out_dir}/rasterize_report.json"
        )
