"""``segtool predict``: label masks for new images from a trained model."""

from __future__ import annotations

import argparse
from typing import Any

from segtool.cli.common import (
    UsageError,
    add_max_pixels,
    bounded,
    flag,
    note,
    path_arg,
    progress_bar,
    say,
    use_max_pixels,
    warn,
)
from segtool.core.constants import DEVICES

HELP = """\
Predict label masks for new images with a trained model.

Masks are PNGs with the same palette as rasterize's, at each image's own size.

example:
  segtool predict run/ new_images/ masks_out/ --overlay"""


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``segtool predict``."""
    parser.usage = "%(prog)s MODEL IMAGES OUT [options]"
    parser.add_argument(
        "model",
        type=path_arg,
        metavar="MODEL",
        help="Run folder (or a save_pretrained model folder).",
    )
    parser.add_argument(
        "images",
        type=path_arg,
        metavar="IMAGES",
        help="Folder of images; for a run trained on volumes, a folder of .nii.gz volumes "
        "or a volume folder (its imagesTs/, or --split cases).",
    )
    parser.add_argument("out_dir", type=path_arg, metavar="OUT", help="Folder to write masks into.")
    parser.add_argument(
        "--classes",
        type=path_arg,
        metavar="FILE",
        help="classes.json, for a bare model folder [default: the run's].",
    )
    parser.add_argument(
        "--split", metavar="NAME", help="Only the images of this split of the run's split.json."
    )
    parser.add_argument(
        "--tile",
        type=bounded(int, 32),
        metavar="TILE",
        help="Predict in TILE x TILE tiles (large images).",
    )
    parser.add_argument(
        "--overlap", type=float, metavar="X", help="Tile overlap fraction. [default: 0.25]"
    )
    flag(parser, "--tta", "Average predictions over flips.")
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="Binary and multi-label models: probability cut [the run's tuned per-class "
        "thresholds for multi-label models, else 0.5].",
    )
    flag(parser, "--probabilities", "Also write OUT/<stem>.npz (float16 per class).")
    flag(parser, "--overlay", "Also write OUT/overlays/<stem>.jpg.")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="The device.")
    parser.add_argument(
        "--batch-size",
        type=bounded(int, 1),
        default=8,
        metavar="N",
        help="Images (or tiles) per forward pass.",
    )
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, help="Mixed precision [default: on CUDA]."
    )
    flag(
        parser,
        "--skip-invalid",
        "Predict the readable images and list the others (else nothing is written).",
    )
    flag(parser, "--overwrite", "Replace OUT if it exists.")
    add_max_pixels(parser)


def run(args: argparse.Namespace) -> None:
    """Predict a folder of images (or volumes) and print the throughput."""
    use_max_pixels(args.max_pixels)
    from segtool.core.dataset import split_stems
    from segtool.predict.engine import TILE_OVERLAP
    from segtool.predict.folder import predict_dir
    from segtool.predict.predictor import load_predictor
    from segtool.predict.volumes import volume_settings

    if args.overlap is not None and args.tile is None:
        raise UsageError("--overlap is the overlap of --tile tiles; add --tile or drop --overlap")
    predictor = load_predictor(args.model, args.classes)
    stems = split_stems(predictor.split, args.split, predictor.source) if args.split else None
    if volume_settings(predictor.source) is not None:
        _predict_volumes(predictor, args, stems)
        return
    with progress_bar() as on_progress:
        report = predict_dir(
            predictor,
            args.images,
            args.out_dir,
            stems=stems,
            tile=args.tile,
            overlap=TILE_OVERLAP if args.overlap is None else args.overlap,
            tta=args.tta,
            threshold=args.threshold,
            probabilities=args.probabilities,
            overlay_images=args.overlay,
            device=args.device,
            batch_size=args.batch_size,
            amp=args.amp,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            on_progress=on_progress,
        )
    for message in report.notes:
        warn(message)
    for failure in report.failed:
        warn(f"skipped {failure}")
    say(
        f"{report.n_images} masks written to {args.out_dir} in {report.seconds:.1f}s "
        f"({report.images_per_second:.1f} images/s)"
    )
    if args.overlay:
        note(f"overlays: {args.out_dir / 'overlays'}")


def _predict_volumes(predictor: Any, args: argparse.Namespace, cases: set[str] | None) -> None:
    """A run trained on volumes: NIfTI label volumes on the input's grid."""
    from segtool.predict.volumes import predict_volumes

    with progress_bar() as on_progress:
        report = predict_volumes(
            predictor,
            args.images,
            args.out_dir,
            names=cases,
            tta=args.tta,
            threshold=args.threshold,
            probabilities=args.probabilities,
            device=args.device,
            batch_size=args.batch_size,
            amp=args.amp,
            overwrite=args.overwrite,
            on_progress=on_progress,
        )
    for message in report.notes:
        warn(message)
    say(f"{report.n_images} label volumes written to {args.out_dir} in {report.seconds:.1f}s")
