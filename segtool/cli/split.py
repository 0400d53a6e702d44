"""``segtool split``: a deterministic, stable train/val/test split of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    JobsOption,
    MaxPixelsOption,
    handle_errors,
    out,
    use_max_pixels,
    warn,
)


@handle_errors
def split(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="Dataset folder (images/, masks/, classes.json), or a volume folder "
            "(dataset.json, imagesTr/, labelsTr/)."
        ),
    ],
    val: Annotated[float, typer.Option(help="Fraction of images for validation.")] = 0.15,
    test: Annotated[float, typer.Option(help="Fraction of images held out for testing.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing split.json.")
    ] = False,
    jobs: JobsOption = None,
    max_pixels: MaxPixelsOption = None,
) -> None:
    """Split a dataset into train, val and test; writes DATASET/split.json.

    Each image is placed by a hash of (seed, name): the same seed gives the same split, and
    adding images later never moves an existing one. On a volume folder the cases (patients) are
    split, never their slices. Prints the pixel share of each class per
    split, so a rare class missing from val or test shows.

    Example: [bold]segtool split dataset/ --val 0.15 --test 0.15 --seed 0[/]
    """
    from rich.markup import escape
    from rich.table import Table

    from segtool.sources.volume_folder import is_volume_folder
    from segtool.split.assign import split_dataset

    use_max_pixels(max_pixels)
    result = split_dataset(dataset, val=val, test=test, seed=seed, overwrite=overwrite, jobs=jobs)
    for note in result.notes:
        warn(note)
    names = result.class_map.names if result.class_map else None
    k = (
        len(names)
        if names
        else int(max(p.nonzero()[0].max(initial=0) for p in result.pixels.values())) + 1
    )
    labels = names or [str(i) for i in range(k)]
    unit = "cases" if is_volume_folder(dataset) else "images"
    shares = {
        name: pixels[: len(labels)] / (pixels[: len(labels)].sum() or 1)
        for name, pixels in result.pixels.items()
    }
    table = Table(title=f"{result.path} (seed {seed})")
    if len(labels) <= 6:  # a column per class
        table.add_column("split")
        table.add_column(unit, justify="right")
        for label in labels:
            table.add_column(escape(label), justify="right")
        for name, share in shares.items():
            table.add_row(name, str(len(result.split[name])), *(f"{v:.2%}" for v in share))
    else:  # many classes: a row per class, so the table stays readable at 80 columns
        table.add_column("pixel share", overflow="fold", min_width=12)
        for name in shares:
            table.add_column(name, justify="right", no_wrap=True)
        table.add_row(f"[bold]{unit}[/]", *(str(len(result.split[n])) for n in shares))
        for c, label in enumerate(labels):
            table.add_row(escape(label), *(f"{share[c]:.2%}" for share in shares.values()))
    out.print(table)
