"""``segtool evaluate --cv RUN... DATASET`` (a cross-validation summary) and ``segtool evaluate
--compare A B REFERENCE`` (a paired comparison): their checks, calls and tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from segtool.cli.common import UsageError, load_torch, note, progress_bar, say, table, warn

#: evaluate's results table: (summary.json document, title) -> printed.
PrintSummary = Callable[[dict, str], None]
#: Options that score PRED GT folders only, refused with --cv (the runs' own classes).
FOLDER_ONLY = ("classes", "regions", "allow_missing")
#: Object-level options, passed on to every evaluation of both forms.
OBJECT_OPTIONS = (
    "objects",
    "nsd_tolerance",
    "lesion_dilation",
    "lesion_min_size",
    "iou_threshold",
    "connectivity",
    "gallery_by",
)
#: The scores of the fold table and the comparison's differences: key, header, decimals.
COLUMNS = (
    ("dice", "Dice", 4),
    ("iou", "IoU", 4),
    ("precision", "prec.", 4),
    ("recall", "recall", 4),
    ("image_mean_dice", "img Dice", 4),
    ("hd95", "HD95", 2),
)
#: The scores of the fold table.
FOLD_COLUMNS = ("dice", "iou", "hd95")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _paths(args: SimpleNamespace) -> list[Path]:
    return [p for p in (args.pred, args.gt, *(args.more or [])) if p is not None]


def run_cv_or_compare(args: SimpleNamespace, print_summary: PrintSummary) -> None:
    """`args` (evaluate's parameters) with --cv or --compare: check, run with a progress bar,
    then print (the pooled table with evaluate's `print_summary`).

    Raises:
        UsageError: both forms, wrong number of paths, options of another form.
    """
    if args.cv and args.compare:
        raise UsageError("--cv and --compare are two forms; pass one")
    if args.model is not None:
        raise UsageError(
            f"{'--cv' if args.cv else '--compare'} takes the runs as paths; drop --model"
        )
    paths = _paths(args)
    if args.cv:
        if len(paths) < 3:
            raise UsageError("--cv takes the runs of 2 or more folds, then DATASET")
        given = [f"--{n.replace('_', '-')}" for n in FOLDER_ONLY if getattr(args, n)]
        given += ["--split"] * (args.split is not None) + ["--gallery"] * bool(args.gallery)
        if given:
            raise UsageError(
                f"{given[0]} does not go with --cv (each run scores its own val fold); drop it"
            )
    elif len(paths) != 3:
        raise UsageError("--compare takes A B REFERENCE (two prediction folders or runs)")
    common = {
        "out": args.out,
        "with_hd95": args.hd95,
        "jobs": args.jobs,
        "overwrite": args.overwrite,
        "seed": args.seed,
        "device": args.device or "auto",
        "tta": args.tta,
        **{name: getattr(args, name) for name in OBJECT_OPTIONS},
    }
    with progress_bar() as on_progress:
        if args.cv:
            load_torch()
            from segtool.evaluate.crossval import evaluate_folds

            folds = evaluate_folds(paths[:-1], paths[-1], on_progress=on_progress, **common)
        else:
            from segtool.evaluate.compare import compare

            pair = compare(
                *paths,
                classes=args.classes,
                regions=args.regions,
                allow_missing=args.allow_missing,
                split=args.split,
                gallery=args.gallery,
                on_progress=on_progress,
                **common,
            )
    if args.cv:
        print_folds(folds.summary, print_summary)
        for message in folds.warnings:
            warn(message)
        note(f"wrote {folds.summary_path} and {folds.per_image_path}")
        return
    for message in pair.a.warnings + pair.b.warnings:
        warn(message)
    print_comparison(pair.summary)
    note(f"wrote {pair.summary_path} (each side's report: {pair.summary_path.parent}/a, /b)")


def print_folds(summary: dict, print_summary: PrintSummary) -> None:
    """The pooled table (`print_summary`, evaluate's), then mean ± sd over folds beside the
    pooled value, per class and for each mean."""
    cv = summary["cross_validation"]
    items = "cases" if summary.get("volumes") else "images"
    print_summary(
        summary,
        f"pooled: {summary['n_images']} out-of-fold {items} of {len(cv['runs'])} folds",
    )
    # The table keeps to Dice, IoU and HD95 (80 columns); summary.json holds every score.
    shown = [(k, h, d) for k, h, d in COLUMNS if k in summary["mean"] and k in FOLD_COLUMNS]
    rows: list = []
    blocks = [(name, cv["per_class"][name], summary["per_class"][name]) for name in cv["per_class"]]
    blocks.append(None)
    for key, label in (("mean", "mean, foreground"), ("mean_all", "mean, all classes")):
        if key in cv:
            blocks.append((label, cv[key], summary[key]))
    for block in blocks:
        if block is None:
            rows.append(None)
            continue
        label, spread, pooled = block
        cells = []
        for k, _, d in shown:
            s = spread.get(k)
            if s is None:
                cells += ["", ""]
                continue
            sd = "" if s["sd"] is None else f" ± {s['sd']:.{d}f}"
            cells += [f"{_fmt(s['mean'], d)}{sd}", _fmt(pooled.get(k), d)]
        rows.append([label, *cells])
    headers = [c for _, h, _ in shown for c in (f"{h} folds", f"{h} pooled")]
    table(f"{len(cv['runs'])} folds: mean ± sd over folds, and pooled", ["class", *headers], rows)
    say(
        "folds: each run scored on its own validation fold, then the mean and sample sd "
        "(n - 1) over folds; pooled: all out-of-fold images scored as one set"
    )
    for run in cv["runs"]:
        fold = "?" if run["fold"] is None else run["fold"]
        say(f"fold {fold}: {run['run']} ({run['n_images']} {items}; {run['report']})")


def print_comparison(doc: dict) -> None:
    """Dice of A and B, A - B with its interval and the wins per class and mean; then the
    other scores' differences with their intervals."""
    rows: list = []
    others = [(k, h, d) for k, h, d in COLUMNS[1:] if k in doc["mean"]]
    diff_rows: list = []
    entries: list = [*doc["per_class"].items(), None]
    entries += [
        (label, doc[key])
        for key, label in (("mean", "mean, foreground"), ("mean_all", "mean, all classes"))
        if key in doc
    ]
    for entry in entries:
        if entry is None:
            rows.append(None)
            diff_rows.append(None)
            continue
        name, row = entry
        dice, wins = row["dice"], row["wins"]
        ends = dice["ci95"]
        rows.append(
            [
                name,
                _fmt(dice["a"]),
                _fmt(dice["b"]),
                _signed(dice["difference"], 4),
                "—" if ends is None else f"{ends[0]:+.4f} to {ends[1]:+.4f}",
                f"{wins['a']} / {wins['b']} / {wins['ties']}",
            ]
        )
        diff_rows.append([name, *(_diff_cell(row.get(k), d) for k, _, d in others)])
    items = "cases" if doc.get("volumes") else "images"
    title = f"{doc['n_images']} {items}: A = {doc['a']}, B = {doc['b']}, on {doc['references']}"
    table(title, ["class", "Dice A", "Dice B", "A − B", "95% interval", "wins A / B / ties"], rows)
    table("A − B (95% interval)", ["class", *(h for _, h, _ in others)], diff_rows)
    boot = doc["bootstrap"]
    say(
        f"95% intervals: paired percentile bootstrap over {boot['over']} ({boot['resamples']} "
        f"draws, seed {boot['seed']}): A and B drawn on the same images; wins: {doc['wins_by']}"
    )


def _signed(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def _diff_cell(entry: dict | None, digits: int) -> str:
    if entry is None:
        return ""
    ends = entry["ci95"]
    low = max(digits - 1, 1)
    span = "" if ends is None else f" ({ends[0]:+.{low}f} to {ends[1]:+.{low}f})"
    return f"{_signed(entry['difference'], digits)}{span}"
