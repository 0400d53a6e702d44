"""``segtool split``: a deterministic, stable train/val/test split of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segtool.cli.common import (
    Jobs,
    MaxPixels,
    UsageError,
    flag,
    path_argument,
    progress_bar,
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
        float | None,
        typer.Option(
            metavar="X",
            help="Validation images: a fraction (0.15) or an exact count (6). [default: 0.15]",
            show_default=False,
        ),
    ] = None,
    test: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="Test images held out: a fraction (0.15) or an exact count (6); with --folds, "
            "of groups, held out of every fold. [default: 0.15; with --folds 0]",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            min=2,
            metavar="K",
            help="K folds for cross-validation (train --fold k validates on fold k).",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERN",
            help="With --folds: a regular expression whose first group (or whole match) names "
            "an image's group, e.g. a patient id: '^(P\\d+)_'; a group never straddles folds.",
        ),
    ] = None,
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
      segtool split dataset/ --folds 5 --group '^(P\\d+)_' --test 0.15

    With --folds K the images (cases; groups with --group) are dealt into K folds of equal
    size, largest group first, each into the smallest fold; --test holds groups out of every
    fold by the same hash. Replacing such a split (--overwrite) with the same K, seed, --group
    and --test keeps every image in its fold and deals only new ones.
    """
    from segtool.sources.volume_folder import items_of
    from segtool.split.assign import split_dataset

    use_max_pixels(max_pixels)
    if folds is None and group is not None:
        raise UsageError("--group names the groups of --folds; add --folds K")
    if folds is not None and val is not None:
        raise UsageError("with --folds each fold is a validation set; drop --val")
    fold_spec = None
    if folds is not None:
        from segtool.split.folds import FoldSpec

        fold_spec = FoldSpec(folds, group)
    unit = items_of(dataset)
    with progress_bar({"measure": "cases"} if unit == "cases" else None) as on_progress:
        result = split_dataset(
            dataset,
            val=0.15 if val is None else val,
            test=test,
            seed=seed,
            stratify=stratify,
            overwrite=overwrite,
            jobs=jobs,
            folds=fold_spec,
            on_progress=on_progress,
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
    shares = {
        name: pixels[: len(labels)] / (pixels[: len(labels)].sum() or 1)
        for name, pixels in result.pixels.items()
    }
    title = f"{result.path} (seed {seed})"
    if len(labels) <= 6:  # a column per class
        rows = [
            [name, len(result.parts[name]), *(f"{v:.2%}" for v in share)]
            for name, share in shares.items()
        ]
        table(title, ["split", unit, *labels], rows)
    else:  # many classes: a row per class, so the table stays readable at 80 columns
        rows = [[unit, *(len(result.parts[n]) for n in shares)], None]
        rows += [
            [label, *(f"{share[c]:.2%}" for share in shares.values())]
            for c, label in enumerate(labels)
        ]
        table(title, ["pixel share", *shares], rows)
