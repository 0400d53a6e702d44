"""``segtool evaluate``: score predicted label masks against references."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import typer

from segtool.cli.common import (
    Jobs,
    MaxPixels,
    UsageError,
    flag,
    load_torch,
    note,
    path_arg,
    path_argument,
    path_option,
    progress_bar,
    say,
    table,
    use_max_pixels,
    warn,
    with_default,
)
from segtool.cli.evaluate_tables import interval_row, print_objects, summary_notes
from segtool.core.constants import DEVICES


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, title: str) -> None:
    """The results table: one row per scored class, the foreground mean and the all-class mean,
    then one line each on what the means cover and what they leave out."""
    metrics = ("dice", "iou", "precision", "recall")
    with_hd95 = "hd95" in summary["mean"]
    hd95_unit = summary.get("hd95_unit", "px")
    items = "cases" if summary.get("volumes") else "images"
    unit = "voxel" if summary.get("volumes") else "pixel"
    columns = ["class", "Dice", "IoU", "prec.", "recall"]
    columns += [f"HD95 {hd95_unit}"] if with_hd95 else []
    keys = [*metrics, *(["hd95"] if with_hd95 else [])]
    digits = [4] * len(metrics) + [2] * with_hd95
    rows: list = []
    for name, row in summary["per_class"].items():
        cells = [_fmt(row[m]) for m in metrics] + ([_fmt(row["hd95"], 2)] if with_hd95 else [])
        rows.append([name, *cells, row["images_with_reference"]])
        if "ci95" in row:
            rows.append([*interval_row(row["ci95"], keys, digits), ""])
    mean, mean_all = summary["mean"], summary.get("mean_all")
    cells = [_fmt(mean[m]) for m in metrics] + ([_fmt(mean["hd95"], 2)] if with_hd95 else [])
    rows += [None, ["mean, foreground", *cells, ""]]
    if "mean_ci95" in summary:
        rows.append([*interval_row(summary["mean_ci95"], keys, digits), ""])
    if mean_all is not None:
        cells = [_fmt(mean_all[m]) for m in metrics] + (["—"] if with_hd95 else [])
        rows.append(["mean, all classes (mIoU)", *cells, ""])
        if "mean_all_ci95" in summary:
            rows.append([*interval_row(summary["mean_all_ci95"], keys, digits), ""])
    table(title, [*columns, items], rows)
    lines = summary_notes(summary, items, unit)
    for line in lines:
        say(line)
    print_objects(summary)


def command(
    pred: Annotated[
        Path,
        path_argument("PRED", "Folder of predicted PNG masks (with --model: the DATASET)."),
    ],
    gt: Annotated[
        Path | None,
        typer.Argument(
            parser=path_arg,
            metavar="GT",
            show_default=False,
            help="Folder of reference PNG masks (e.g. dataset/masks).",
        ),
    ] = None,
    more: Annotated[
        list[Path] | None,
        typer.Argument(
            parser=path_arg,
            metavar="PATH",
            show_default=False,
            help="With --cv: more runs, then DATASET; with --compare: REFERENCE; with --merge: "
            "more shards.",
        ),
    ] = None,
    model: Annotated[
        list[Path] | None,
        path_option(
            help="A run folder: predict the --split of DATASET, then score it. Repeated: an "
            "ensemble (the runs' probabilities averaged).",
            metavar="RUN",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="With --model on the run's own dataset: test (default), val, all (not train) "
            "or train (by name). Another folder is a separate test set, scored whole.",
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        path_option(help=with_default("classes.json.", "the one beside or in GT"), metavar="FILE"),
    ] = None,
    out: Annotated[
        Path | None,
        path_option(
            "--out",
            help=with_default("Where the report goes.", "PRED, or RUN/evaluation/SPLIT"),
            metavar="DIR",
        ),
    ] = None,
    hd95: Annotated[
        bool, typer.Option("--hd95/--no-hd95", help="Compute HD95 (the slowest metric).")
    ] = True,
    gallery: Annotated[
        int,
        typer.Option(
            min=0, metavar="N", help="Draw the N images with the lowest Dice into OUT/gallery/."
        ),
    ] = 0,
    jobs: Jobs = None,
    allow_missing: Annotated[
        bool, flag("--allow-missing", "Score references without a prediction as empty.")
    ] = False,
    only_predicted: Annotated[
        bool,
        flag(
            "--only-predicted",
            "Score only the references that have a prediction (a predicted subset); the "
            "others are left out and counted.",
        ),
    ] = False,
    device: Annotated[
        Literal[DEVICES] | None,
        typer.Option(help=with_default("With --model: the device.", "auto")),
    ] = None,
    tta: Annotated[bool, flag("--tta", "With --model: average flipped predictions.")] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            metavar="REGIONS",
            help='Score unions of class ids as overlapping regions, e.g. "whole=1,2,3;core=2,3".',
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        flag("--overwrite", "Replace an existing report (and, with --model, predictions)."),
    ] = False,
    max_pixels: MaxPixels = None,
    objects: Annotated[
        bool,
        typer.Option(
            "--objects/--no-objects",
            help="Object-level scores: lesion-wise Dice and HD95 (BraTS 2023), detection "
            "P/R/F1, panoptic quality (with instances/ beside GT), NSD (with --nsd-tolerance).",
        ),
    ] = True,
    nsd_tolerance: Annotated[
        float | None,
        typer.Option(
            min=0, metavar="D", help="Normalised surface Dice at D pixels (mm for volumes)."
        ),
    ] = None,
    lesion_dilation: Annotated[
        int, typer.Option(min=0, help="Lesion-wise: dilation steps joining near lesions.")
    ] = 3,
    lesion_min_size: Annotated[
        float | None,
        typer.Option(
            min=0,
            help=with_default(
                "Lesion-wise: lesions of at most this size (px, mm³) left out.",
                "0 for images (every object), 50 mm³ for volumes (BraTS)",
            ),
        ),
    ] = None,
    iou_threshold: Annotated[
        float,
        typer.Option(min=0.01, max=1, help="Detection: an object is found at IoU >= this."),
    ] = 0.5,
    connectivity: Annotated[
        Literal["full", "face"],
        typer.Option(help="Objects join at corners too (full) or at faces only."),
    ] = "full",
    gallery_by: Annotated[
        Literal["dice", "lesion_dice"],
        typer.Option(help="What the gallery ranks by: each image's Dice or lesion-wise Dice."),
    ] = "dice",
    seed: Annotated[int, typer.Option(help="Seeds the 95% bootstrap intervals.")] = 0,
    cv: Annotated[
        bool,
        flag(
            "--cv",
            "Cross-validation: evaluate --cv RUN0 RUN1 ... DATASET predicts each run's own "
            "validation fold; mean ± sd over folds and the pooled out-of-fold score.",
        ),
    ] = False,
    compare: Annotated[
        bool,
        flag(
            "--compare",
            "evaluate --compare A B REFERENCE: two prediction folders (or runs, on DATASET's "
            "--split) on the same references; paired differences with 95% intervals, wins.",
        ),
    ] = False,
    postprocess: Annotated[
        bool,
        typer.Option(
            "--postprocess/--no-postprocess",
            help="With --model: apply the run's post-processing chosen on the validation "
            "split (postprocess.json), as predict does.",
        ),
    ] = True,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="K/N",
            help="Score only shard K of N of GT (by name) and keep its items for --merge.",
        ),
    ] = None,
    merge: Annotated[
        bool,
        flag(
            "--merge",
            "evaluate --merge SHARD... --out DIR: the --out folders of --shard K/N runs, as "
            "the one report a run over all of GT writes.",
        ),
    ] = False,
) -> None:
    """Score predicted label masks against references.

    Dice, IoU, precision, recall and HD95. Two forms: segtool evaluate PRED GT scores two
    folders of masks; segtool evaluate --model RUN DATASET --split test predicts the run's
    held-out split of the dataset first; segtool evaluate --model RUN OTHER scores all of a
    separate test folder (refused if it holds training images). Writes summary.json and
    per_image.csv, prints a table.

    example:
      segtool evaluate --model run/ dataset/ --gallery 8
      segtool evaluate --cv runs/fold0 runs/fold1 runs/fold2 dataset/
      segtool evaluate --compare predA/ predB/ dataset/masks
      segtool evaluate --model run_a/ --model run_b/ dataset/
    """
    args = SimpleNamespace(**locals())
    if cv or compare:
        from segtool.cli.evaluate_cv import run_cv_or_compare

        run_cv_or_compare(args, print_summary)
    elif merge:
        from segtool.cli.evaluate_merge import merge_command

        merge_command(args, print_summary)
    elif more:
        raise UsageError("more than PRED GT: use --cv RUN... DATASET or --compare A B REFERENCE")
    else:
        _evaluate(args)


def _counted(dataset: Path, split: str | None) -> dict[str, str]:
    """What evaluate --model's predicting phase counts: the images (a volume folder's cases)
    of `dataset`'s `split`."""
    from segtool.sources.volume_folder import items_of

    return {"predict": f"{items_of(dataset)} of {dataset}" + (f"'s {split} split" if split else "")}


def _evaluate(args: SimpleNamespace) -> None:
    """Score (predicting first with --model), then print the table and where the report went."""
    first, references, model, split = args.pred, args.gt, args.model, args.split
    use_max_pixels(args.max_pixels)
    with progress_bar(_counted(first, split) if model else None) as on_progress:
        if model:
            if references is not None:
                raise UsageError("with --model, pass only the DATASET folder")
            if args.regions is not None:
                raise UsageError("with --model, the run's own regions are scored")
            given = [name for name, on in _folder_options(args) if on]
            if given:
                raise UsageError(f"{given[0]} scores PRED GT folders; with --model, drop it")
            load_torch()
            from segtool.evaluate.model import evaluate_model
            from segtool.evaluate.runs import read_run

            result = evaluate_model(
                model,
                first,
                split=split,
                out=args.out,
                with_hd95=args.hd95,
                device=args.device or "auto",
                tta=args.tta,
                postprocess=args.postprocess,
                gallery=args.gallery,
                jobs=args.jobs,
                overwrite=args.overwrite,
                on_progress=on_progress,
                **_object_options(args),
            )
            source = read_run(model[0]).dataset
            separate = split is None and (source is None or source.resolve() != first.resolve())
            scope = "the separate test set" if separate else f"the {split or 'test'} split of"
            title = f"{' + '.join(map(str, model))} on {scope} {first}"
        else:
            if references is None:
                raise UsageError("pass PRED and GT folders, or --model RUN DATASET")
            given = [name for name, on in _model_options(args) if on]
            if given:
                raise UsageError(
                    f"{given[0]} goes with --model RUN DATASET; drop it to score folders"
                )
            from segtool.core.shards import parse_shard
            from segtool.evaluate.report import evaluate_dirs

            result = evaluate_dirs(
                first,
                references,
                classes=args.classes,
                out=args.out,
                with_hd95=args.hd95,
                jobs=args.jobs,
                allow_missing=args.allow_missing,
                only_predicted=args.only_predicted,
                gallery=args.gallery,
                regions=args.regions,
                overwrite=args.overwrite,
                on_progress=on_progress,
                **_object_options(args),
                shard=parse_shard(args.shard),
            )
            title = f"{first} vs {references}"
    _print_result(result, title)


def _print_result(result: Any, title: str) -> None:
    """The warnings, the table, and where the report went."""
    for message in result.warnings:
        warn(message)
    items = "cases" if result.summary.get("volumes") else "images"
    print_summary(result.summary, f"{result.summary['n_images']} {items}: {title}")
    written = [result.summary_path, result.per_image_path]
    if result.confusion_path is not None:
        written += [result.confusion_path, result.confusion_path.with_suffix(".png")]
    note(f"wrote {', '.join(map(str, written[:-1]))} and {written[-1]}")
    if result.gallery:
        note(
            f"gallery of the {len(result.gallery)} lowest-Dice {items}: "
            f"{result.gallery[0].parent / 'index.html'}"
        )


def _model_options(args: SimpleNamespace) -> list[tuple[str, bool]]:
    """Whether each option that goes with --model only is given."""
    return [
        ("--split", bool(args.split)),
        ("--device", bool(args.device)),
        ("--tta", args.tta),
        ("--no-postprocess", not args.postprocess),
    ]


def _folder_options(args: SimpleNamespace) -> list[tuple[str, bool]]:
    """Whether each option that scores PRED GT folders only is given (--model scores the
    run's classes)."""
    return [
        ("--classes", args.classes is not None),
        ("--allow-missing", args.allow_missing),
        ("--only-predicted", args.only_predicted),
        ("--shard", args.shard is not None),
    ]


def _object_options(args: SimpleNamespace) -> dict[str, object]:
    """The object-level and interval options, the same for folders and for --model."""
    names = ("objects", "nsd_tolerance", "lesion_dilation", "lesion_min_size", "iou_threshold",
             "connectivity", "gallery_by", "seed")  # fmt: skip
    return {name: getattr(args, name) for name in names}
