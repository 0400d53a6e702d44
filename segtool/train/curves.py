"""A run's training record: metrics.csv (one row per epoch) and curves.png drawn from it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path

#: The first columns of metrics.csv (per-class Dice columns follow).
METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_dice",
    "val_iou",
    "val_images",
    "validated",
    "lr",
    "seconds",
]


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of metrics.csv (empty if there is none)."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            int(row["epoch"])
            for column in METRIC_COLUMNS[1:]:
                if row.get(column):
                    float(row[column])
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise SegtoolError(
            f"{path}: not a readable metrics.csv ({type(exc).__name__}: {exc}); restore it, or "
            f"start the run again with --overwrite"
        ) from exc
    return rows


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from all rows (atomically; a run has few epochs)."""
    columns = list(METRIC_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def class_colours(n: int) -> list[tuple[float, float, float, float]]:
    """`n` distinct colours: matplotlib's tab10/tab20 up to 20, else evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def curves_figure(rows: list[dict[str, Any]]) -> Any:
    """Three panels per epoch: loss (train and validation); validation mean Dice and IoU;
    validation Dice per class, each class its own colour, the legend beside the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]

    def series(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]

    classes = [k for k in (rows[-1] if rows else {}) if k.startswith("dice_")]
    legend_columns = 1 + len(classes) // 16
    fig, (loss, mean, per_class) = plt.subplots(
        1, 3, figsize=(14 + 1.6 * legend_columns, 4), dpi=80
    )
    loss.plot(epochs, series("train_loss"), "o-", label="train loss")
    loss.plot(epochs, series("val_loss"), "o-", label="validation loss")
    loss.set_title("loss")
    mean.plot(epochs, series("val_dice"), "o-", label="mean Dice")
    mean.plot(epochs, series("val_iou"), "o-", label="mean IoU")
    mean.set_title("validation, mean over classes")
    for key, colour in zip(classes, class_colours(len(classes)), strict=True):
        per_class.plot(epochs, series(key), "-", color=colour, label=key.removeprefix("dice_"))
    per_class.set_title("validation Dice per class")
    for ax in (mean, per_class):
        ax.set_ylim(0, 1)
    for ax in (loss, mean, per_class):
        ax.set_xlabel("epoch")
    loss.legend()
    mean.legend()
    if classes:
        per_class.legend(
            fontsize=8, ncols=legend_columns, loc="upper left", bbox_to_anchor=(1.02, 1)
        )
    fig.tight_layout()
    return fig


def draw_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """`curves_figure` as a PNG, written atomically."""
    import matplotlib.pyplot as plt

    fig = curves_figure(rows)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
