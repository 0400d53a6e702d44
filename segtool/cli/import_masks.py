"""``segtool import-masks``: image and mask folders made elsewhere -> a segtool dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    ImageMode,
    ImagesOption,
    JobsOption,
    err,
    handle_errors,
    out,
    progress_bar,
    warn,
)


class Unknown(str, Enum):
    """What a mask value missing from the table becomes."""

    error = "error"
    ignore = "ignore"


@handle_errors
def import_masks(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGES MASKS OUT | ROOT OUT",
            help="An image folder and a mask folder (paired by file stem), or the root of a "
            "VOC tree or of train/ val/ test/ split folders; then the dataset folder to write.",
        ),
    ],
    values: Annotated[
        str | None,
        typer.Option(
            "--values",
            help="Mask value (palette index) -> class, e.g. '0=_background_,255=membrane'; "
            "__ignore__ names the ignore value.",
        ),
    ] = None,
    colors: Annotated[
        Path | None,
        typer.Option(
            "--colors", help="Colour table for RGB masks: a classes.json, or 'R G B name' lines."
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="A labels.txt or classes.json fixing the class ids."),
    ] = None,
    unknown: Annotated[
        Unknown, typer.Option(help="A value not in the table: an error, or the ignore value.")
    ] = Unknown.error,
    images: ImagesOption = ImageMode.copy,
    jobs: JobsOption = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Import valid pairs; list the rest in the report."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
) -> None:
    """Turn images and masks made elsewhere (0/255, 0/1, value tables, RGB colours, palette
    PNGs) into a segtool dataset, keeping a VOC or split-folder layout's official split.

    Examples: [bold]segtool import-masks images/ masks/ dataset/[/] (0/255 or 0/1 masks)
    [bold]segtool import-masks VOCdevkit/VOC2012 dataset/[/] (split.json from ImageSets)
    [bold]segtool import-masks CamVid/ dataset/ --colors label_colors.txt[/]
    """
    from rich.markup import escape
    from rich.table import Table

    from segtool.core.errors import SegtoolError
    from segtool.rasterize.import_masks import import_masks as run_import

    if len(paths) not in (2, 3):
        raise SegtoolError(
            f"import-masks takes IMAGES MASKS OUT or ROOT OUT, got {len(paths)} path(s)"
        )
    images_dir, masks_dir, out_dir = (paths[0], None, paths[1]) if len(paths) == 2 else paths
    with progress_bar() as on_progress:
        report = run_import(
            images_dir,
            masks_dir,
            out_dir,
            values=values,
            colors=colors,
            labels=labels,
            unknown=unknown.value,
            image_mode=images.value,
            jobs=jobs,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    doc = report.to_json()
    ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
    err.print(f"layout: {report.layout}; class map: {escape(ids)}", highlight=False)
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    found = Table(title="values found in the masks")
    for column in ("value", "pixels", "class"):
        found.add_column(column, justify="left" if column == "class" else "right")
    for value, row in doc["values"].items():
        found.add_row(value, str(row["pixels"]), escape(row["class"] or "(ignore)"))
    out.print(found)
    table = Table(title=f"{report.n_images} masks written to {escape(str(out_dir))}")
    for column in ("id", "class", "pixels", "pixel share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in doc["classes"].items():
        table.add_row(str(row["id"]), escape(name), str(row["pixels"]), f"{row['pixel_share']:.2%}")
    if doc["ignore"]["pixels"]:
        table.add_row(str(doc["ignore"]["value"]), "(ignore)", str(doc["ignore"]["pixels"]), "")
    out.print(table)
    if report.split is not None:
        sizes = ", ".join(f"{k} {len(report.split[k])}" for k in ("train", "val", "test"))
        out.print(f"official split kept in {escape(str(out_dir))}/split.json: {sizes}")
