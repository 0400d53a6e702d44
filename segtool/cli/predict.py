"""``segtool predict``: label masks for new images from a trained model."""

from __future__ import annotations

import argparse

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
    model, images, out_dir, split = args.model, args.images, args.out_dir, args.split
    tta, threshold, probabilities, overlay = (
        args.tta,
        args.threshold,
        args.probabilities,
        args.overlay,
    )
    device, batch_size, amp, overwrite = args.device, args.batch_size, args.amp, args.overwrite
    from segtool.core.classes import mode_for
    from segtool.core.constants import MULTICLASS
    from segtool.core.dataset import split_stems
    from segtool.core.errors import SegtoolError
    from segtool.predict.folder import predict_dir
    from segtool.predict.predictor import load_predictor
    from segtool.predict.volumes import volume_settings

    if args.overlap is not None and args.tile is None:
        raise UsageError("--overlap is the overlap of --tile tiles; add --tile or drop --overlap")
    predictor = load_predictor(model, args.classes)
    cmap = predictor.class_map
    if threshold is not None and mode_for(cmap.num_classes, cmap.multilabel) == MULTICLASS:
        raise SegtoolError(
            f"--threshold {threshold}: {model} has {cmap.num_classes} classes and gives each "
            "pixel the most probable one; a cut applies to binary and multi-label models only, "
            "drop --threshold"
        )
    stems = split_stems(predictor.split, split, predictor.source) if split else None
    if volume_settings(predictor.source) is not None:
        _predict_volumes(
            predictor,
            images,
            out_dir,
            stems,
            tta,
            threshold,
            probabilities,
            device,
            batch_size,
            amp,
            overwrite,
        )
        return
    with progress_bar() as on_progress:
        report = predict_dir(
            predictor,
            images,
            out_dir,
            stems=stems,
            tile=args.tile,
            overlap=0.25 if args.overlap is None else args.overlap,
            tta=tta,
            threshold=threshold,
            probabilities=probabilities,
            overlay_images=overlay,
            device=device,
            batch_size=batch_size,
            amp=amp,
            skip_invalid=args.skip_invalid,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    for message in report.notes:
        warn(message)
    for failure in report.failed:
        warn(f"skipped {failure}")
    say(
        f"{report.n_images} masks written to {out_dir} in {report.seconds:.1f}s "
        f"({report.images_per_second:.1f} images/s)"
    )
    if overlay:
        note(f"overlays: {out_dir / 'overlays'}")


def _predict_volumes(
    predictor,
    volumes,
    out_dir,
    cases,
    tta,
    threshold,
    probabilities,
    device,
    batch_size,
    amp,
    overwrite,
) -> None:
    """A run trained on volumes: NIfTI label volumes on the input's grid."""
    from segtool.predict.volumes import predict_volumes

    with progress_bar() as on_progress:
        report = predict_volumes(
            predictor,
            volumes,
            out_dir,
            names=cases,
            tta=tta,
            threshold=threshold,
            probabilities=probabilities,
            device=device,
            batch_size=batch_size,
            amp=amp,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    for message in report.notes:
        warn(message)
    say(f"{report.n_images} label volumes written to {out_dir} in {report.seconds:.1f}s")
