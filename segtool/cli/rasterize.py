"""``segtool rasterize``: labelme, COCO, CVAT, VIA or Label Studio annotations -> a dataset of
PNG label masks."""

from __future__ import annotations

import argparse

from segtool.cli.common import (
    add_images,
    add_jobs,
    add_max_pixels,
    bounded,
    flag,
    note,
    path_arg,
    progress_bar,
    say,
    table,
    use_max_pixels,
    warn,
)

#: Annotation formats (``auto`` detects from the content); kept in sync with
#: ``segtool.sources.detect.FORMATS`` by a test.
FORMATS = ("auto", "labelme", "coco", "cvat", "via", "labelstudio")

HELP = """\
Rasterize annotations into PNG label masks.

labelme pixel-identical to labelme2voc, COCO pixel-identical to pycocotools. Writes
OUT/images/, OUT/masks/<stem>.png, OUT/classes.json and OUT/rasterize_report.json.

With --multilabel each mask pixel is a bit set (class id c is bit c-1, the top bit marks
ignore), so a shape drawn over another keeps both classes.

examples:
  segtool rasterize annotations/ dataset/ --labels labels.txt
  segtool rasterize instances_train.json dataset/ --image-dir train2017/"""


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``segtool rasterize``."""
    parser.usage = "%(prog)s SOURCE OUT [options]"
    parser.add_argument(
        "annotations",
        type=path_arg,
        metavar="SOURCE",
        help="A labelme folder (searched recursively), an export file (COCO, CVAT XML, VIA, "
        "Label Studio), or a folder holding one.",
    )
    parser.add_argument("out_dir", type=path_arg, metavar="OUT", help="Dataset folder to write.")
    parser.add_argument(
        "--labels",
        type=path_arg,
        metavar="FILE",
        help="labelme labels.txt or a classes.json; default: derived and printed.",
    )
    add_images(parser)
    add_jobs(parser)
    flag(parser, "--skip-invalid", "Convert valid files; list the rest in the report.")
    flag(parser, "--overwrite", "Replace OUT if it exists.")
    flag(
        parser,
        "--multilabel",
        "Keep overlapping shapes of different classes: one bit per class in each mask.",
    )
    flag(
        parser,
        "--instances",
        "Also write OUT/instances/<stem>.png, one id per object (labelme: group_id; COCO: "
        "annotation; CVAT: shape or group; VIA, Label Studio: region).",
    )
    flag(parser, "--preview", "Also write OUT/previews/<stem>.png colour pictures.")
    parser.add_argument(
        "--png-level",
        type=bounded(int, 0, 9),
        default=1,
        metavar="0-9",
        help="Mask compression: 0 none, 1 run-length (fast, small on masks), 2-9 deflate "
        "(smaller, slower).",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="Annotation format; auto detects it."
    )
    parser.add_argument(
        "--image-dir",
        type=path_arg,
        metavar="DIR",
        help="Where an export's image paths start; default: beside the file.",
    )
    parser.add_argument(
        "--via-attribute",
        metavar="NAME",
        help="VIA region attribute holding the class; default: the only one.",
    )
    parser.add_argument(
        "--crowd",
        choices=("ignore", "class"),
        default="ignore",
        help="COCO iscrowd regions: the ignore value, or their category's class.",
    )
    add_max_pixels(parser)


def run(args: argparse.Namespace) -> None:
    """Rasterize, then print the class table, the derived class map and the warnings."""
    from segtool.rasterize.folder import rasterize_dir

    use_max_pixels(args.max_pixels)
    with progress_bar() as on_progress:
        report = rasterize_dir(
            args.annotations,
            args.out_dir,
            labels=args.labels,
            images=args.images,
            jobs=args.jobs,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            multilabel=args.multilabel,
            instances=args.instances,
            previews=args.preview,
            png_level=args.png_level,
            on_progress=on_progress,
            format=args.format,
            image_dir=args.image_dir,
            via_attribute=args.via_attribute,
            crowd=args.crowd,
        )
    doc = report.to_json()
    out_dir = args.out_dir
    if args.labels is None:
        ids = ", ".join(f"{i}={n}" for i, n in enumerate(report.class_map.names))
        note(f"class map derived from the annotations: {ids}")
    for skipped in report.skipped:
        warn(f"skipped {skipped['reason']}")
    for message in report.warnings[:10]:
        warn(message)
    if len(report.warnings) > 10:
        warn(f"{len(report.warnings) - 10} more warnings in {out_dir}/rasterize_report.json")

    kind = "multi-label masks" if doc.get("multilabel") else "masks"
    objects = ["objects"] if args.instances else []
    rows = [
        [
            row["id"],
            name,
            row["shapes"],
            *([row["objects"]] if args.instances else []),
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
