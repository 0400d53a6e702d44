"""The parts of ``segtool evaluate``'s printout beyond the pixel table: a 95 % interval row
under each score row, the object-level table, and how both were made."""

from __future__ import annotations

from collections.abc import Sequence

from segtool.cli.common import say, table

#: The object-level columns: summary key, header, decimals.
OBJECT_COLUMNS = (
    ("lesion_dice", "les. Dice", 4),
    ("lesion_hd95", "les. HD95", 2),
    ("detection_precision", "det. P", 4),
    ("detection_recall", "det. R", 4),
    ("detection_f1", "det. F1", 4),
    ("nsd", "NSD", 4),
    ("pq", "PQ", 4),
)
CI_LABEL = "  95% interval"


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def interval_row(ci95: dict | None, keys: Sequence[str], digits: Sequence[int]) -> list:
    """The cells under a score row: each score's interval as ``low–high`` (blank without)."""
    cells = []
    for key, d in zip(keys, digits, strict=True):
        ends = (ci95 or {}).get(key)
        cells.append(
            "" if ends is None else f"{ends[0]:.{max(d - 2, 1)}f}–{ends[1]:.{max(d - 2, 1)}f}"
        )
    return [CI_LABEL, *cells]


def print_objects(summary: dict) -> None:
    """The object-level table (when evaluate scored objects), with intervals, and one line
    each on its settings, lesion counts and the intervals' bootstrap."""
    settings = summary.get("objects")
    if settings is not None:
        _object_table(summary, settings)
    boot = summary.get("bootstrap")
    if boot is not None:
        say(
            f"95% intervals: percentile bootstrap over {boot['over']} ({boot['resamples']} "
            f"draws, seed {boot['seed']}); a mean over classes is taken in each draw"
        )


def _object_table(summary: dict, settings: dict) -> None:
    unit = settings["unit"]
    shown = [(k, h, d) for k, h, d in OBJECT_COLUMNS if k in summary["mean"]]
    keys = [k for k, _, _ in shown]
    digits = [d for _, _, d in shown]
    headers = [f"{h} {unit}" if k == "lesion_hd95" else h for k, h, _ in shown]
    rows: list = []
    for name, row in summary["per_class"].items():
        if "lesion_dice" not in row:
            continue  # the background
        rows.append([name, *(_fmt(row[k], d) for k, d in zip(keys, digits, strict=True))])
        rows.append(interval_row(row.get("ci95"), keys, digits))
    mean = summary["mean"]
    rows += [
        None,
        ["mean, foreground", *(_fmt(mean[k], d) for k, d in zip(keys, digits, strict=True))],
    ]
    rows.append(interval_row(summary.get("mean_ci95"), keys, digits))
    size = "mm³" if unit == "mm" else "px"
    smallest = settings["lesion_min_size"]
    kept = f"lesions over {smallest:g} {size}" if smallest > 0 else "every lesion"
    table(
        f"objects (lesion-wise as BraTS 2023: dilation {settings['lesion_dilation']}, {kept}; "
        f"detection at IoU >= {settings['iou_threshold']:g})",
        ["class", *headers],
        rows,
    )
    for name, row in summary["per_class"].items():
        if "lesion_dice" in row:
            say(
                f"{name}: {row['lesions']} lesions scored ({row['lesions_missed']} missed), "
                f"{row['lesion_false_positives']} false positive components, "
                f"{row['lesions_small']} small lesions left out; objects {row['objects_tp']} "
                f"found, {row['objects_fn']} missed, {row['objects_fp']} false"
            )
    if settings.get("nsd_tolerance") is not None:
        say(f"NSD: normalised surface Dice at {settings['nsd_tolerance']:g} {unit}")


def summary_notes(summary: dict, items: str, unit: str) -> list[str]:
    """The lines under the results table: how the scores were pooled, what each mean covers
    and leaves out (and which classes the mean precision counts as 0), the accuracy."""
    mean = summary["mean"]
    lines = (
        [
            f"multi-label: each class scored as its own binary problem; {unit} accuracy counts "
            f"{unit}s whose whole label set is right"
        ]
        if summary.get("multilabel")
        else []
    )
    lines += [
        f"Dice, IoU, precision, recall: {unit}s pooled over all {items} per class, then "
        f"averaged over classes; {unit}s are ignored only where the reference holds "
        f"{summary.get('ignore_index', 255)}",
        "mean, foreground: " + ", ".join(summary.get("mean_covers", [])),
        "mean, all classes (mIoU): " + ", ".join(summary.get("mean_all_covers", [])),
    ]
    for label, left_out in (
        ("mean, foreground", summary.get("mean_left_out", {})),
        ("mean, all classes", summary.get("mean_all_left_out", {})),
    ):
        for metric, names in left_out.items():
            if metric == "precision_predicted":
                zero = [n for n in names if n not in left_out.get("precision", [])]
                if zero:
                    lines.append(f"{label} precision counts 0 (never predicted): {', '.join(zero)}")
            elif names:
                why = "absent from every reference" if metric == "recall" else "undefined"
                if metric in ("dice", "iou", "precision", "image_mean_dice", "hd95"):
                    why = "absent from every prediction and reference"
                lines.append(f"{label} {metric} leaves out ({why}): {', '.join(names)}")
    lines.append(
        f"{unit} accuracy {_fmt(summary['pixel_accuracy'], 4)}; per-{items[:-1]} mean Dice "
        f"{_fmt(mean['image_mean_dice'], 4)} (each {items[:-1]}'s Dice, then the mean over {items} "
        f"and foreground classes) over {summary['n_images']} {items}"
    )
    if summary.get("prediction_ignored"):
        lines.append(
            f"{summary['prediction_ignored']} predicted {unit}s hold the ignore value "
            f"{summary['ignore_index']}: scored as misses of the reference's class"
        )
    return lines
