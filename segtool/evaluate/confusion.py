"""The confusion matrix of an evaluation: which class is mistaken for which.

Each pair's K x (K + 1) matrix comes from the pass that counts it (`score.score_pair`); the
folder's is their sum, made as the scores arrive so that no per-image matrix is kept. Rows are
the reference's classes (its ignore pixels left out, as every score does), columns the
predicted class, the last column the prediction's ignore value (scored as a miss). Written as
``confusion.csv`` (counts) and ``confusion.png`` (each row as shares of its reference pixels).
Multi-label masks and regions have none: each class is its own binary problem there.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from segtool.core.files import atomic_path
from segtool.evaluate.score import ImageScore

CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"


def pad_matrix(matrix: np.ndarray, k: int) -> np.ndarray:
    """`matrix` (K x (K + 1)) for `k` >= K classes: new rows and class columns are zero, the
    ignore column stays last."""
    have = matrix.shape[0]
    if have == k:
        return matrix
    out = np.zeros((k, k + 1), dtype=np.int64)
    out[:have, :have] = matrix[:, :have]
    out[:have, k] = matrix[:, have]
    return out


def add_confusion(total: np.ndarray | None, score: ImageScore) -> np.ndarray | None:
    """`total` plus the pair's matrix (taken from `score`, which then holds none)."""
    matrix, score.confusion = score.confusion, None
    if matrix is None:
        return total
    if total is None:
        return matrix.astype(np.int64)
    k = max(total.shape[0], matrix.shape[0])
    return pad_matrix(total, k) + pad_matrix(matrix, k)


def write_confusion_csv(path: Path, matrix: np.ndarray, names: list[str], ignore: int) -> None:
    """Counts: a row per reference class, a column per predicted class and the ignore value."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["reference \\ prediction", *names, f"ignore ({ignore})"])
        for name, row in zip(names, matrix, strict=True):
            writer.writerow([name, *(int(v) for v in row)])


def row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the reference pixels of that class); 0 for an empty row."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape), where=sums > 0)


def draw_confusion(path: Path, matrix: np.ndarray, names: list[str], unit: str) -> None:
    """The row-normalised matrix as a PNG: a cell per (reference, prediction) pair holding its
    share of the reference class's `unit` (pixels, voxels); the ignore column only if used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*names, "ignore"] if matrix[:, -1].any() else list(names)
    shares = row_shares(matrix)[:, : len(columns)]
    side = min(4 + 0.45 * len(columns), 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, min(3.5 + 0.45 * len(names), 40)), dpi=80)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label=f"share of the reference class's {unit}")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    if len(names) <= 20:  # the values, where they fit
        for r in range(len(names)):
            for c in range(len(columns)):
                colour = "white" if shares[r, c] > 0.5 else "black"
                ax.text(c, r, f"{shares[r, c]:.2f}", ha="center", va="center", color=colour, size=8)
    ax.set_title("confusion (rows sum to 1)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_confusion(
    csv_path: Path, png_path: Path, matrix: np.ndarray, context: dict, volumes: bool
) -> None:
    """Both confusion files of a report: the counts (`write_confusion_csv`) and the picture
    (`draw_confusion`, in voxels for `volumes`), with the summary `context`'s class names and
    ignore value; one run and a merge of shards write them the same way."""
    names = context["names"]
    write_confusion_csv(csv_path, matrix, names, context["ignore_index"])
    draw_confusion(png_path, matrix, names, "voxels" if volumes else "pixels")
