"""``segtool rasterize``: labelme, COCO, CVAT, VIA or Label Studio annotations -> a dataset of
PNG label masks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from segtool.cli.common import (
    Images,
    Jobs,
    MaxPixels,
    Overwrite,
    flag,
    note,
    path_argument,
    path_option,
    progress_bar,
    say,
    table,
    use_max_pixels,
    warn,
    with_default,
)

if TYPE_CHECKING:
    from segtool.rasterize.report import RasterizeReport

#: Annotation formats (``auto`` detects from the content); kept in sync with
#: ``segtool.sources.detect.FORMATS`` by a test.
FORMATS = ("auto", "labelme", "coco", "cvat", "via", "labelstudio", "yolo")


def command(
    source: Annotated[
        Path,
        path_argument(
            "SOURCE",
            "A labelme folder (searched recursively), an export file (COCO, CVAT XML, VIA, "
            "Label Studio), or a folder holding one; a YOLO dataset (its data.yaml or folder).",
        ),
    ],
    out: Annotated[Path, path_argument("OUT", "Dataset folder to write.")],
    labels: Annotated[
        Path | None,
        path_option(
            help=with_default("labelme labels.txt or a classes.json.", "derived and printed"),
            metavar="FILE",
        ),
    ] = None,
    images: Images = "copy",
    jobs: Jobs = None,
    skip_invalid: Annotated[
        bool, flag("--skip-invalid", "Convert valid files; list the rest in the report.")
    ] = False,
    overwrite: Overwrite = False,
    multilabel: Annotated[
        bool,
        flag(
            "--multilabel",
            "Keep overlapping shapes of different classes: one bit per class in each mask.",
        ),
    ] = False,
    instances: Annotated[
        bool,
        flag(
            "--instances",
            "Also write OUT/instances/<stem>.png, one id per object (labelme: group_id; "
            "COCO: annotation; CVAT: shape or group; VIA, Label Studio: region).",
        ),
    ] = False,
    preview: Annotated[
        bool, flag("--preview", "Also write OUT/previews/<stem>.png colour pictures.")
    ] = False,
    png_level: Annotated[
        int,
        typer.Option(
            min=0,
            max=9,
            help="Mask compression: 0 none, 1 run-length (fast, small on masks), 2-9 deflate "
            "(smaller, slower).",
        ),
    ] = 1,
    format: Annotated[
        Literal[FORMATS], typer.Option(help="Annotation format; auto detects it.")
    ] = "auto",
    image_dir: Annotated[
        Path | None,
        path_option(
            help=with_default("Where an export's image paths start.", "beside the file"),
            metavar="DIR",
        ),
    ] = None,
    via_attribute: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=with_default("VIA region attribute holding the class.", "the only one"),
        ),
    ] = None,
    crowd: Annotated[
        Literal["ignore", "class"],
        typer.Option(help="COCO iscrowd regions: the ignore value, or their category's class."),
    ] = "ignore",
    max_pixels: MaxPixels = None,
) -> None:
    """Rasterize annotations into PNG label masks.

    labelme pixel-identical to labelme2voc, COCO pixel-identical to pycocotools. Writes
    OUT/images/, OUT/masks/<stem>.png, OUT/classes.json and OUT/rasterize_report.json.

    With --multilabel each mask pixel is a bit set (class id c is bit c-1, the top bit marks
    ignore), so a shape drawn over another keeps both classes.

    examples:
      segtool rasterize annotations/ dataset/ --labels labels.txt
      segtool rasterize instances_train.json dataset/ --image-dir train2017/
      segtool rasterize yolo_dataset/ dataset/
    """
    from segtool.rasterize.folder import rasterize_dir

    use_max_pixels(max_pixels)
    with progress_bar() as on_progress:
        report = rasterize_dir(
            source,
            out,
            labels=labels,
            images=images,
            jobs=jobs,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            multilabel=multilabel,
            instances=instances,
            previews=preview,
            png_level=png_level,
            on_progress=on_progress,
            format=format,
            image_dir=image_dir,
            via_attribute=via_attribute,
            crowd=crowd,
        )
    _print_report(report, out, derived=labels is None, instances=instances)


def _print_report(report: RasterizeReport, out_dir: Path, derived: bool, instances: bool) -> None:
    """The class table, the derived class map and the warnings."""
    doc = report.to_json()
    if derived:
        ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
        note(f"class map {report.class_map_source}: {ids}")
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    for message in report.warnings[:10]:
        warn(message)
    if len(report.warnings) > 10:
        warn(f"{len(report.warnings) - 10} more warnings in {out_dir}/rasterize_report.json")

    kind = "multi-label masks" if doc.get("multilabel") else "masks"
    objects = ["objects"] if instances else []
    rows = [
        [
            row["id"],
            name,
            row["shapes"],
            *([row["objects"]] if instances else []),
            row["pixels"],
            f"{row['pixel_share']:.2%}",
        ]
        for name, row in doc["classes"].items()
    ]
    ignore = doc["ignore"]
    if ignore["shapes"]:
        rows.append(
            [
                ignore["value"],
                "(ignore)",
                ignore["shapes"],
                *([""] * len(objects)),
                ignore["pixels"],
                "",
            ]
        )
    table(
        f"{report.n_images} {kind} written to {out_dir}",
        ["id", "class", "shapes", *objects, "pixels", "pixel share"],
        rows,
    )
    if doc.get("overlaps"):
        pairs = [[" & ".join(row["classes"]), row["pixels"]] for row in doc["overlaps"]]
        table("overlapping pixels per class pair", ["classes", "pixels"], pairs)
    if report.skipped:
        say(f"{len(report.skipped)} invalid file(s) skipped; see {out_dir}/rasterize_report.json")
    if report.split is not None:
        sizes = ", ".join(f"{name} {n}" for name, n in report.split.items())
        say(f"official split (one export per split folder) kept in {out_dir}/split.json: {sizes}")
