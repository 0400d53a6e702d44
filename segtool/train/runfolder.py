"""The run folder: checked as an output (new, replaced or resumed), and what it records as
training goes: metrics.csv and curves.png (config.json and last.pt are written by the loop)."""

from __future__ import annotations

import csv
import platform
import shutil
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core.constants import CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.errors import SegtoolError
from segtool.core.files import DiskFullError, OutputPlan, atomic_path, check_overwrite, write_json

if TYPE_CHECKING:
    from torch import nn

    from segtool.core.classes import ClassMap
    from segtool.train.build import Run, TrainingData
    from segtool.train.config import TrainConfig
    from segtool.train.volume_data import VolumeData

#: Where the checkpoint that --resume continues from lives inside a run folder.
LAST_CHECKPOINT = Path("checkpoints", "last.pt")
#: The best model's folder inside a run folder.
MODEL_DIR = "model"
#: A run's disk use at its peak, in multiples of its model's weights: ``last.pt`` (the weights
#: and AdamW's two moments) and the best model, while a new ``last.pt`` is written beside the
#: old one (3 + 3 + 1).
PEAK_WEIGHTS = 7
#: Room for the rest of a run folder (metrics, curves, config and records).
RUN_EXTRA_BYTES = 16 * 2**20
#: The first columns of metrics.csv (per-class Dice columns follow).
METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_dice",
    "val_iou",
    "val_images",
    "lr",
    "seconds",
]


def package_versions() -> dict[str, str]:
    """Versions of segtool and the libraries that decide its numbers."""
    versions = {"python": platform.python_version()}
    for name in (
        "segtool",
        "torch",
        "torchvision",
        "segmentation-models-pytorch",
        "albumentations",
        "numpy",
        "opencv-python-headless",
        "pillow",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


def plan_run(
    out: Path, dataset: Path, split_file: str | None, resume: bool, overwrite: bool
) -> OutputPlan | None:
    """The run folder as this command's output, checked against its inputs (the dataset).

    Returns:
        The plan: a new (or --overwrite'd) run is built beside `out` and moved in at the end;
        None on --resume, where the run is continued in place, each file written atomically.

    Raises:
        SegtoolError: `out` is, contains or lies inside the dataset, exists without --resume
            or --overwrite, or (with --resume) holds no run.
    """
    plan = OutputPlan(overwrite=overwrite or resume)
    plan.read("the dataset's images", dataset / IMAGES_DIR)
    plan.read("the dataset's masks", dataset / MASKS_DIR)
    plan.read("the dataset", dataset)
    plan.read("the split file", Path(split_file) if split_file else None)
    plan.write(out, folder=True, option="--out")
    if not out.is_symlink():  # a link is refused by the plan's own check
        check_overwrite(out, overwrite or resume, alternative="resume to continue it")
    plan.check()
    if resume:
        if not out.is_dir():
            raise SegtoolError(f"{out}: no such run to resume; drop --resume to start it")
        return None
    return plan


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def check_room(run_dir: Path, model: nn.Module, shown: Path) -> None:
    """Refuse, before the first epoch, a run whose checkpoints will not fit on its disk.

    Args:
        run_dir: where the run is written (a resumed run's ``last.pt`` and best model there
            are replaced as it goes, so their space counts as free).
        model: the model (its weights set the size of every checkpoint).
        shown: the run folder to name in the message (the user's ``--out``).

    Raises:
        DiskFullError: the disk has less free space than the run's peak use.
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    held = _size(run_dir / LAST_CHECKPOINT) + _size(run_dir / MODEL_DIR)
    need = PEAK_WEIGHTS * weights + RUN_EXTRA_BYTES - held
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise DiskFullError(
            f"{shown}: {free / 2**20:.0f} MB free on its disk, but this run needs about "
            f"{need / 2**20:.0f} MB (last.pt with the optimizer's state and the best model, and "
            f"each new last.pt written beside the old one); free space, or pass --out on a disk "
            f"with room"
        )


def publish_run(plan: OutputPlan | None, run_dir: Path, *, keep: bool) -> bool:
    """Move the new run into place when `keep` and it holds a checkpoint, else drop it.

    Returns:
        Whether `out` now holds this run (always, when resuming in place).
    """
    if plan is None:
        return True
    if keep and (run_dir / LAST_CHECKPOINT).is_file():
        plan.commit()
        return True
    plan.discard()
    return False


def _files(data: TrainingData) -> str:
    """The fingerprint --resume compares: names and sizes of the files the split names."""
    from segtool.train.data import fingerprint, split_pairs

    return fingerprint(split_pairs(data.pairs, data.split), times=False)


def write_records(
    out: Path,
    dataset: Path,
    config: TrainConfig,
    class_map: ClassMap,
    data: TrainingData | VolumeData,
    run: Run,
    world: int,
    plan: dict[str, Any] | None,
) -> None:
    """classes.json, split.json and config.json: what the run was trained on, how (for a
    volume folder also its channels, slice axis and standardisation, which predict reads), and
    the plan that chose it."""
    from segtool.train.data import fingerprint
    from segtool.train.volume_data import VolumeData
    from segtool.train.volumes import case_fingerprint

    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    class_map.save(out / CLASSES_FILE)
    write_json(out / SPLIT_FILE, data.split)
    amp = str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype else None
    images = {"train": len(data.train), "val": len(data.val), "test": len(data.split["test"])}
    volumes = isinstance(data, VolumeData)
    write_json(
        out / "config.json",
        {
            "options": asdict(config),
            "dataset": str(dataset.resolve()),
            "dataset_fingerprint": (
                "-".join(case_fingerprint(c, config.axis) for c in data.volumes.cases)[:64]
                if volumes
                else fingerprint(data.pairs)
            ),
            **({"volumes": data.record(config)} if volumes else {}),
            **({} if volumes else {"dataset_files": _files(data)}),
            "classes": list(class_map.names),
            "ignore_index": class_map.ignore_index,
            "mode": run.mode,
            "images": {**images, "skipped_unpaired": len(data.skipped)},
            "device": str(run.device),
            "amp": amp,
            "world_size": world,
            "versions": package_versions(),
            "plan": plan,
        },
    )
