"""``segtool split``: a deterministic, stable train/val/test split of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    Jobs,
    MaxPixels,
    flag,
    path_argument,
    table,
    use_max_pixels,
    warn,
)


def command(
    dataset: Annotated[
        Path,
        path_argument(
            "DATASET",
            "Dataset folder (images/, masks/, classes.json), or a volume folder "
            "(dataset.json, imagesTr/, labelsTr/).",
        ),
    ],
    val: Annotated[
        float,
        typer.Option(
            metavar="X",
            help="Validation images: a fraction (0.15) or an exact count (6).",
        ),
    ] = 0.15,
    test: Annotated[
        float,
        typer.Option(
            metavar="X",
            help="Test images held out: a fraction (0.15) or an exact count (6).",
        ),
    ] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
    stratify: Annotated[
        bool,
        flag(
            "--stratify",
            "Share the images of each class out among the splits (grouped by the rarest "
            "class each holds), so a rare class reaches val and test; for small datasets.",
        ),
    ] = False,
    overwrite: Annotated[bool, flag("--overwrite", "Replace an existing split.json.")] = False,
    jobs: Jobs = None,
    max_pixels: MaxPixels = None,
) -> None:
    """Split a dataset into train, val and test.

    Writes DATASET/split.json. Each image is placed by a hash of (seed, name): the same seed
    gives the same split, and adding images later never moves an existing one (with two
    fractions; counts and --stratify rank each group by the same hash). On a volume
    folder the cases (patients) are split, never their slices. Prints the pixel share of each
    class per split, so a rare class missing from val or test shows.

    example:
      segtool split dataset/ --val 0.15 --test 0.15 --seed 0
      segtool split dataset/ --val 6 --test 6 --stratify
    """
    from segtool.sources.volume_folder import is_volume_folder
    from segtool.split.assign import split_dataset

    use_max_pixels(max_pixels)
    result = split_dataset(
        dataset,
        val=val,
        test=test,
        seed=seed,
        stratify=stratify,
        overwrite=overwrite,
        jobs=jobs,
    )
    for message in result.notes:
        warn(message)
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
    title = f"{result.path} (seed {seed})"
    if len(labels) <= 6:  # a column per class
        rows = [
            [name, len(result.split[name]), *(f"{v:.2%}" for v in share)]
            for name, share in shares.items()
        ]
        table(title, ["split", unit, *labels], rows)
    else:  # many classes: a row per class, so the table stays readable at 80 columns
        rows = [[unit, *(len(result.split[n]) for n in shares)], None]
        rows += [
            [label, *(f"{share[c]:.2%}" for share in shares.values())]
            for c, label in enumerate(labels)
        ]
        table(title, ["pixel share", *shares], rows)
