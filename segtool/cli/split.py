"""``segtool split``: a deterministic, stable train/val/test split of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import JobsOption, handle_errors, out


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
) -> None:
    """Split a dataset into train, val and test; writes DATASET/split.json.

    Each image is placed by a hash of (seed, name): the same seed gives the same split, and
    adding images later never moves an existing one. On a volume folder the cases (patients) are
    split, never their slices. Prints the pixel share of each class per
    split, so a rare class missing from val or test shows.

    Example: [bold]segtool split dataset/ --val 0.15 --test 0.15 --seed 0[/]
    """
    from rich.table import Table

    from segtool.sources.volume_folder import is_volume_folder
    from segtool.split.assign import split_dataset

    result = split_dataset(dataset, val=val, test=test, seed=seed, overwrite=overwrite, jobs=jobs)
    names = result.class_map.names if result.class_map else None
    table = Table(title=f"{result.path} (seed {seed})")
    table.add_column("split")
    table.add_column("cases" if is_volume_folder(dataset) else "images", justify="right")
    k = (
        len(names)
        if names
        else int(max(p.nonzero()[0].max(initial=0) for p in result.pixels.values())) + 1
    )
    labels = names or [str(i) for i in range(k)]
    for label in labels:
        table.add_column(label, justify="right")
    for name, pixels in result.pixels.items():
        counted = pixels[: len(labels)]
        total = counted.sum() or 1
        table.add_row(name, str(len(result.split[name])), *(f"{n / total:.2%}" for n in counted))
    out.print(table)
