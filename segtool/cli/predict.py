"""``segtool predict``: label masks for new images from a trained model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import typer

from segtool.cli.common import (
    MaxPixels,
    Overwrite,
    UsageError,
    flag,
    load_torch,
    note,
    path_argument,
    path_option,
    progress_bar,
    refuse_image_options,
    say,
    use_max_pixels,
    warn,
    with_default,
)
from segtool.core.constants import BACKENDS, DEVICES


def command(
    model: Annotated[
        list[Path],
        path_argument(
            "RUN",
            "Run folder (or a save_pretrained model folder, or an export folder of segtool "
            "export); several are an ensemble (their probabilities averaged).",
        ),
    ],
    images: Annotated[
        Path,
        path_argument(
            "IMAGES",
            "Folder of images; for a run trained on volumes, a folder of .nii.gz volumes or a "
            "volume folder (its imagesTs/, or --split cases).",
        ),
    ],
    out: Annotated[Path, path_argument("OUT", "Folder to write masks into.")],
    classes: Annotated[
        Path | None,
        path_option(
            help=with_default("classes.json, for a bare model folder.", "the run's"),
            metavar="FILE",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Only the images of this split of the run's split.json."),
    ] = None,
    names_list: Annotated[
        Path | None,
        path_option(
            "--list",
            help="Only the images (or cases) named in FILE: one file name or stem a line.",
            metavar="FILE",
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(min=32, metavar="TILE", help="Predict in TILE x TILE tiles (large images)."),
    ] = None,
    overlap: Annotated[
        float | None,
        typer.Option(metavar="X", help=with_default("Tile overlap fraction.", 0.25)),
    ] = None,
    tta: Annotated[bool, flag("--tta", "Average predictions over flips.")] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            metavar="P",
            help=with_default(
                "Binary and multi-label models: probability cut.",
                "the run's tuned per-class thresholds for multi-label models, else 0.5",
            ),
        ),
    ] = None,
    probabilities: Annotated[
        bool, flag("--probabilities", "Also write OUT/<stem>.npz (float16 per class).")
    ] = False,
    overlay: Annotated[bool, flag("--overlay", "Also write OUT/overlays/<stem>.jpg.")] = False,
    device: Annotated[Literal[DEVICES], typer.Option(help="The device.")] = "auto",
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Images (or tiles) per forward pass.")
    ] = 8,
    amp: Annotated[
        bool | None,
        typer.Option("--amp/--no-amp", help=with_default("Mixed precision.", "on CUDA")),
    ] = None,
    skip_invalid: Annotated[
        bool,
        flag(
            "--skip-invalid",
            "Predict the readable images and list the others (else nothing is written).",
        ),
    ] = False,
    as_format: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="FORMAT",
            help=(
                "Also write the masks as pre-annotations: labelme (OUT/<stem>.json), coco, cvat, "
                "via or labelstudio (one file in OUT; images named relative to IMAGES)."
            ),
        ),
    ] = None,
    simplify: Annotated[
        float,
        typer.Option(
            metavar="PX",
            help="--as polygons: simplification tolerance in pixels (0: exact outlines).",
        ),
    ] = 0.0,
    embed_images: Annotated[
        bool, flag("--embed-images", "--as labelme: put each image in its JSON (imageData).")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="K/N",
            help=with_default(
                "Only shard K of N of the images (by name), for N jobs or machines; a shard "
                "whose OUT is already complete is skipped.",
                "RANK+1/WORLD_SIZE under torchrun, else all",
            ),
        ),
    ] = None,
    backend: Annotated[
        Literal[BACKENDS],
        typer.Option(
            help="What runs the model: torch (a run; a TorchScript export), or onnxruntime "
            "(MODEL is an ONNX export folder written by segtool export)."
        ),
    ] = "torch",
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    postprocess: Annotated[
        bool,
        typer.Option(
            "--postprocess/--no-postprocess",
            help="Apply the run's post-processing chosen on the validation split "
            "(postprocess.json), if it has one.",
        ),
    ] = True,
) -> None:
    """Predict label masks for new images with a trained model.

    Masks are PNGs with the same palette as rasterize's, at each image's own size. Several
    RUN folders before IMAGES and OUT are an ensemble: their probabilities (each with its
    own input size and TTA) are averaged; runs with other classes are refused.

    example:
      segtool predict run/ new_images/ masks_out/ --overlay
      segtool predict run/ new_images/ pre/ --as labelme
      segtool predict run_a/ run_b/ new_images/ masks_out/
      segtool predict exported/ new_images/ masks_out/ --backend onnxruntime
    """
    _predict(SimpleNamespace(**locals()))


def _predict(args: SimpleNamespace) -> None:
    """Predict a folder of images (or volumes) and print the throughput."""
    use_max_pixels(args.max_pixels)
    load_torch()
    from segtool.core.dataset import split_stems
    from segtool.core.namelist import read_name_list
    from segtool.core.shards import parse_shard
    from segtool.predict.ensemble import load_predictors
    from segtool.predict.folder import predict_dir
    from segtool.predict.spec import TILE_OVERLAP, PredictSpec

    if args.overlap is not None and args.tile is None:
        raise UsageError("--overlap is the overlap of --tile tiles; add --tile or drop --overlap")
    spec = PredictSpec(
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
        annotations=args.as_format,
        simplify=args.simplify,
        embed_images=args.embed_images,
        postprocess=args.postprocess,
        shard=parse_shard(args.shard),
        backend=args.backend,
    )
    if args.split and args.names_list:
        raise UsageError("--split and --list both choose the images; pass one of them")
    predictors = load_predictors(args.model, args.classes, args.backend)
    predictor = predictors[0]
    stems = split_stems(predictor.split, args.split, predictor.source) if args.split else None
    if args.names_list is not None:
        stems = read_name_list(args.names_list)
    if predictor.run is not None and predictor.run.volume_settings() is not None:
        _predict_volumes(predictors, args, spec, stems)
        return
    with progress_bar() as on_progress:
        report = predict_dir(
            predictors, args.images, args.out, spec, stems=stems, on_progress=on_progress
        )
    for message in report.notes:
        warn(message)
    for failure in report.failed:
        warn(f"skipped {failure}")
    say(
        f"{report.n_images} masks written to {args.out} in {report.seconds:.1f}s "
        f"({report.images_per_second:.1f} images/s)"
    )
    if args.overlay:
        note(f"overlays: {args.out / 'overlays'}")
    if args.as_format:
        note(f"{args.as_format} pre-annotations: {args.out}")


def _predict_volumes(
    predictors: Any, args: SimpleNamespace, spec: Any, cases: set[str] | None
) -> None:
    """A run trained on volumes: NIfTI label volumes on the input's grid (the options that
    apply to images only are refused, not ignored)."""
    from segtool.predict.volumes import predict_volumes

    if args.as_format:
        raise UsageError(
            f"--as {args.as_format}: annotation tools take images, and this run was trained on "
            f"volumes; drop --as"
        )
    if spec.shard is not None:
        raise UsageError(f"--shard {spec.shard}: shards split image folders; drop --shard")
    refuse_image_options(
        ("--tile", args.tile is not None),
        ("--overlap", args.overlap is not None),
        ("--overlay", args.overlay),
        ("--skip-invalid", args.skip_invalid),
        ("--max-pixels", args.max_pixels is not None),
    )

    with progress_bar({"predict": "cases"}) as on_progress:
        report = predict_volumes(
            predictors, args.images, args.out, spec, names=cases, on_progress=on_progress
        )
    for message in report.notes:
        warn(message)
    say(f"{report.n_images} label volumes (cases) written to {args.out} in {report.seconds:.1f}s")
