"""``segtool import-masks``: image and mask folders made elsewhere -> a segtool dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from segtool.cli.common import (
    Images,
    Jobs,
    Overwrite,
    UsageError,
    flag,
    note,
    path_arg,
    path_option,
    progress_bar,
    say,
    table,
    warn,
)


def command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            parser=path_arg,
            metavar="PATH",
            show_default=False,
            help="An image folder and a mask folder (paired by file stem), or the root of a "
            "VOC tree or of train/ val/ test/ split folders; then the dataset folder to write.",
        ),
    ],
    values: Annotated[
        str | None,
        typer.Option(
            metavar="TABLE",
            help="Mask value (palette index) -> class, e.g. '0=_background_,255=membrane'; "
            "__ignore__ names the ignore value.",
        ),
    ] = None,
    colors: Annotated[
        Path | None,
        path_option(
            help="Colour table for RGB masks: a classes.json, or 'R G B name' lines.",
            metavar="FILE",
        ),
    ] = None,
    names: Annotated[
        Path | None,
        path_option(
            help="Class names by mask value: line i names value i (__ignore__: the ignore "
            "value), e.g. CamVid's 11 names, value 0 first.",
            metavar="FILE",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        path_option(help="A labels.txt or classes.json fixing the class ids.", metavar="FILE"),
    ] = None,
    background_scored: Annotated[
        bool,
        flag(
            "--background-scored",
            "Id 0 is a real class that evaluate scores (e.g. ISBI's membrane); automatic "
            "when the table names no background.",
        ),
    ] = False,
    unknown: Annotated[
        Literal["error", "ignore"],
        typer.Option(help="A value not in the table: an error, or the ignore value."),
    ] = "error",
    images: Images = "copy",
    jobs: Jobs = None,
    skip_invalid: Annotated[
        bool, flag("--skip-invalid", "Import valid pairs; list the rest in the report.")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn images and masks made elsewhere into a dataset.

    Masks may be 0/255, 0/1, value tables, RGB colours or palette PNGs; a VOC or split-folder
    layout's official split is kept.

    examples:
      segtool import-masks images/ masks/ dataset/            (0/255 or 0/1 masks)
      segtool import-masks VOCdevkit/VOC2012 dataset/         (split.json from ImageSets)
      segtool import-masks CamVid/ dataset/                   (SegNet's CamVid: its 11 names)
      segtool import-masks images/ masks/ dataset/ --names names.txt
    """
    from segtool.rasterize.import_masks import import_masks as run_import

    given = [o for o, v in (("--values", values), ("--names", names), ("--colors", colors)) if v]
    if len(given) > 1:  # one class table: by value or by colour
        raise UsageError(f"{given[1]}: not allowed with {given[0]}; give one class table")
    if len(paths) not in (2, 3):
        raise UsageError(f"pass IMAGES MASKS OUT or ROOT OUT, not {len(paths)} path(s)")
    images_dir, masks_dir, out_dir = (paths[0], None, paths[1]) if len(paths) == 2 else paths
    pairs = "image/mask pairs"
    with progress_bar({"check": pairs, "import": pairs}) as on_progress:
        report = run_import(
            images_dir,
            masks_dir,
            out_dir,
            values=values,
            colors=colors,
            names=names,
            labels=labels,
            background_scored=background_scored,
            unknown=unknown,
            image_mode=images,
            jobs=jobs,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    doc = report.to_json()
    ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
    note(f"layout: {report.layout}; class map: {ids}")
    if report.names_from:
        note(f"class names: {report.names_from}")
    if report.class_map.background_scored:
        note(f"id 0 ({report.class_map.names[0]}) is a class of its own: evaluate scores it")
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    found = [
        [value, row["pixels"], row["class"] or "(ignore)"] for value, row in doc["values"].items()
    ]
    table("values found in the masks", ["value", "pixels", "class"], found)
    rows = [
        [row["id"], name, row["pixels"], f"{row['pixel_share']:.2%}"]
        for name, row in doc["classes"].items()
    ]
    if doc["ignore"]["pixels"]:
        rows.append([doc["ignore"]["value"], "(ignore)", doc["ignore"]["pixels"], ""])
    table(
        f"{report.n_images} masks written to {out_dir}",
        ["id", "class", "pixels", "pixel share"],
        rows,
    )
    if report.split is not None:
        sizes = ", ".join(f"{k} {len(report.split[k])}" for k in ("train", "val", "test"))
        say(f"official split kept in {out_dir}/split.json: {sizes}")
