"""``segtool import-masks``: image and mask folders made elsewhere -> a segtool dataset."""

from __future__ import annotations

import argparse

from segtool.cli.common import (
    UsageError,
    add_images,
    add_jobs,
    flag,
    note,
    path_arg,
    progress_bar,
    say,
    table,
    warn,
)

HELP = """\
Turn images and masks made elsewhere into a dataset.

Masks may be 0/255, 0/1, value tables, RGB colours or palette PNGs; a VOC or split-folder
layout's official split is kept.

examples:
  segtool import-masks images/ masks/ dataset/            (0/255 or 0/1 masks)
  segtool import-masks VOCdevkit/VOC2012 dataset/         (split.json from ImageSets)
  segtool import-masks CamVid/ dataset/ --colors label_colors.txt"""


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``segtool import-masks``."""
    parser.usage = "%(prog)s (IMAGES MASKS | ROOT) OUT [options]"
    parser.add_argument(
        "paths",
        type=path_arg,
        nargs="+",
        metavar="PATH",
        help="An image folder and a mask folder (paired by file stem), or the root of a "
        "VOC tree or of train/ val/ test/ split folders; then the dataset folder to write.",
    )
    table = parser.add_mutually_exclusive_group()  # one class table: by value or by colour
    table.add_argument(
        "--values",
        metavar="TABLE",
        help="Mask value (palette index) -> class, e.g. '0=_background_,255=membrane'; "
        "__ignore__ names the ignore value.",
    )
    table.add_argument(
        "--colors",
        type=path_arg,
        metavar="FILE",
        help="Colour table for RGB masks: a classes.json, or 'R G B name' lines.",
    )
    parser.add_argument(
        "--labels",
        type=path_arg,
        metavar="FILE",
        help="A labels.txt or classes.json fixing the class ids.",
    )
    parser.add_argument(
        "--unknown",
        choices=("error", "ignore"),
        default="error",
        help="A value not in the table: an error, or the ignore value.",
    )
    add_images(parser)
    add_jobs(parser)
    flag(parser, "--skip-invalid", "Import valid pairs; list the rest in the report.")
    flag(parser, "--overwrite", "Replace OUT if it exists.")


def run(args: argparse.Namespace) -> None:
    """Import, then print the values found, the class table and the split kept."""
    from segtool.rasterize.import_masks import import_masks as run_import

    paths = args.paths
    if len(paths) not in (2, 3):
        raise UsageError(f"pass IMAGES MASKS OUT or ROOT OUT, not {len(paths)} path(s)")
    images_dir, masks_dir, out_dir = (paths[0], None, paths[1]) if len(paths) == 2 else paths
    with progress_bar() as on_progress:
        report = run_import(
            images_dir,
            masks_dir,
            out_dir,
            values=args.values,
            colors=args.colors,
            labels=args.labels,
            unknown=args.unknown,
            image_mode=args.images,
            jobs=args.jobs,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            on_progress=on_progress,
        )
    doc = report.to_json()
    ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
    note(f"layout: {report.layout}; class map: {ids}")
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
