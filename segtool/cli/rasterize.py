"""``segtool rasterize``: labelme, COCO, CVAT, VIA or Label Studio annotations -> a dataset of
PNG label masks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    ImageMode,
    ImagesOption,
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


class Format(str, Enum):
    """Annotation formats (``auto`` detects from the content); kept in sync with
    ``segtool.sources.detect.FORMATS`` by a test."""

    auto = "auto"
    labelme = "labelme"
    coco = "coco"
    cvat = "cvat"
    via = "via"
    labelstudio = "labelstudio"


class Crowd(str, Enum):
    """How COCO ``iscrowd: 1`` regions are painted."""

    ignore = "ignore"
    # as their category
    class_ = "class"


@handle_errors
def rasterize(
    annotations: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE",
            help="A labelme folder (searched recursively), an export file (COCO, CVAT XML, VIA, "
            "Label Studio), or a folder holding one.",
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder to write.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="labelme labels.txt or a classes.json; default: derived and printed."
        ),
    ] = None,
    images: ImagesOption = ImageMode.copy,
    jobs: JobsOption = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Convert valid files; list the rest in the report."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
    multilabel: Annotated[
        bool,
        typer.Option(
            "--multilabel",
            help="Keep overlapping shapes of different classes: one bit per class in each mask.",
        ),
    ] = False,
    instances: Annotated[
        bool,
        typer.Option(
            "--instances", help="Also write OUT/instances/<stem>.png, one id per object (group_id)."
        ),
    ] = False,
    preview: Annotated[
        bool,
        typer.Option("--preview", help="Also write OUT/previews/<stem>.png colour pictures."),
    ] = False,
    png_level: Annotated[
        int,
        typer.Option(
            "--png-level",
            min=0,
            max=9,
            help="Mask compression: 0 none, 1 run-length (fast, small on masks), 2-9 deflate "
            "(smaller, slower).",
        ),
    ] = 1,
    format: Annotated[
        Format, typer.Option("--format", help="Annotation format; auto detects it.")
    ] = Format.auto,
    image_dir: Annotated[
        Path | None,
        typer.Option(
            "--image-dir", help="Where an export's image paths start; default: beside the file."
        ),
    ] = None,
    via_attribute: Annotated[
        str | None,
        typer.Option(
            "--via-attribute", help="VIA region attribute holding the class; default: the only one."
        ),
    ] = None,
    crowd: Annotated[
        Crowd,
        typer.Option(help="COCO iscrowd regions: the ignore value, or their category's class."),
    ] = Crowd.ignore,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Rasterize annotations into PNG label masks: labelme pixel-identical to labelme2voc,
    COCO pixel-identical to pycocotools.

    Writes OUT/images/, OUT/masks/<stem>.png, OUT/classes.json and OUT/rasterize_report.json.

    With --multilabel each mask pixel is a bit set (class id c is bit c-1, the top bit marks
    ignore), so a shape drawn over another keeps both classes.

    Examples: [bold]segtool rasterize annotations/ dataset/ --labels labels.txt[/]
    [bold]segtool rasterize instances_train.json dataset/ --image-dir train2017/[/]
    """
    from rich.table import Table

    from segtool.rasterize.folder import rasterize_dir

    use_max_pixels(max_pixels)
    with progress_bar() as on_progress:
        report = rasterize_dir(
            annotations,
            out_dir,
            labels=labels,
            images=images.value,
            jobs=jobs,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            multilabel=multilabel,
            instances=instances,
            previews=preview,
            png_level=png_level,
            on_progress=on_progress,
            format=format.value,
            image_dir=image_dir,
            via_attribute=via_attribute,
            crowd=crowd.value,
        )
    doc = report.to_json()
    if labels is None:
        ids = esc(", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names)))
        err.print(f"class map derived from the annotations: {ids}", highlight=False)
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    for message in report.warnings[:10]:
        warn(message)
    if len(report.warnings) > 10:
        warn(f"{len(report.warnings) - 10} more warnings in {out_dir}/rasterize_report.json")

    kind = "multi-label masks" if doc.get("multilabel") else "masks"
    table = Table(title=esc(f"{report.n_images} {kind} written to {out_dir}"))
    columns = [
        "id",
        "class",
        "shapes",
        *(["objects"] if instances else []),
        "pixels",
        "pixel share",
    ]
    for column in columns:  # names fold rather than end in "…" (at 80 columns)
        if column == "class":
            table.add_column(column, overflow="fold", min_width=12)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for name, row in doc["classes"].items():
        objects = [str(row["objects"])] if instances else []
        share = f"{row['pixel_share']:.2%}"
        table.add_row(
            str(row["id"]), esc(name), str(row["shapes"]), *objects, str(row["pixels"]), share
        )
    ignore = doc["ignore"]
    if ignore["shapes"]:
        objects = [""] if instances else []
        table.add_row(
            str(ignore["value"]),
            "(ignore)",
            str(ignore["shapes"]),
            *objects,
            str(ignore["pixels"]),
            "",
        )
    out.print(table)
    if doc.get("overlaps"):
        pairs = Table(title="overlapping pixels per class pair")
        for column in ("classes", "pixels"):
            pairs.add_column(column, justify="left" if column == "classes" else "right")
        for row in doc["overlaps"]:
            pairs.add_row(esc(" & ".join(row["classes"])), str(row["pixels"]))
        out.print(pairs)
    if report.skipped:
        out.print(
            f"{len(report.skipped)} invalid file(s) skipped; see {out_dir}/rasterize_report.json",
            markup=False,
        )
