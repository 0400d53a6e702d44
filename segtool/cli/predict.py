"""``segtool predict``: label masks for new images from a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    MaxPixelsOption,
    err,
    handle_errors,
    out,
    progress_bar,
    use_max_pixels,
    warn,
)


@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="Run folder (or a save_pretrained model folder).")],
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of images; for a run trained on volumes, a folder of .nii.gz volumes "
            "or a volume folder (its imagesTs/, or --split cases)."
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write masks into.")],
    classes: Annotated[
        Path | None,
        typer.Option(help="classes.json, for a bare model folder \\[default: the run's]."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Only the images of this split of the run's split.json.")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Predict in TILE x TILE tiles (large images).", min=32)
    ] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap fraction.")] = 0.25,
    tta: Annotated[bool, typer.Option("--tta", help="Average predictions over flips.")] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Binary and multi-label models: probability cut \\[the run's tuned per-class "
            "thresholds for multi-label models, else 0.5]."
        ),
    ] = None,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write OUT/<stem>.npz (float16 per class).")
    ] = False,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write OUT/overlays/<stem>.jpg.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images (or tiles) per forward pass.", min=1)] = 8,
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="Mixed precision \\[on CUDA].")
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Predict the readable images and list the others (else nothing is written).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Predict label masks (PNG, same palette as rasterize) at each image's own size.

    Example: [bold]segtool predict run/ new_images/ masks_out/ --overlay[/]
    """
    use_max_pixels(max_pixels)
    from segtool.core.dataset import split_stems
    from segtool.predict.folder import predict_dir
    from segtool.predict.predictor import load_predictor
    from segtool.predict.volumes import volume_settings

    predictor = load_predictor(model, classes)
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
            tile=tile,
            overlap=overlap,
            tta=tta,
            threshold=threshold,
            probabilities=probabilities,
            overlay_images=overlay,
            device=device,
            batch_size=batch_size,
            amp=amp,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    for note in report.notes:
        warn(note)
    for failure in report.failed:
        warn(f"skipped {failure}")
    out.print(
        f"{report.n_images} masks written to {out_dir} in {report.seconds:.1f}s "
        f"({report.images_per_second:.1f} images/s)",
        highlight=False,
        markup=False,
    )
    if overlay:
        err.print(f"overlays: {out_dir / 'overlays'}", highlight=False, markup=False)


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
    for note in report.notes:
        warn(note)
    out.print(
        f"{report.n_images} label volumes written to {out_dir} in {report.seconds:.1f}s",
        highlight=False,
    )
