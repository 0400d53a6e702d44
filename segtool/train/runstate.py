"""What a run carries besides its model: the `Setup` `fit` decided before anything is
written, the `Progress` the epochs made (``last.pt`` carries it across --resume, within an
epoch too) and the `FitResult`, how the run ended."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segtool.core.classes import ClassMap
from segtool.core.regions import Regions
from segtool.train.config import TrainConfig
from segtool.train.runfolder import RunFolder


@dataclass
class FitResult:
    """How a run ended."""

    run: Path
    best_epoch: int
    best_dice: float
    best_per_class: dict[str, float]
    epochs_done: int
    stopped: str  # "finished", "early stop", "time budget", "interrupted"
    main_process: bool = True  # False on the other ranks of a torchrun job
    thresholds: dict | None = None  # multi-label runs with tune_thresholds: thresholds.json
    kept: bool = True  # False when an interrupted --overwrite left the previous run in place
    #: the epochs planned: the first plan shown (a budget's fitted from the first steps), or
    #: a later one where re-planning grew it past that (never fewer than the epochs done)
    planned_epochs: int = 0
    cut: tuple[int, int] | None = None  #: the budget cut the last epoch: (steps done, steps)
    saved_steps: int = 0  #: interrupted: steps of the next epoch that last.pt holds too


def epoch_row(
    epoch: int,
    train_loss: float,
    validation: tuple[float, int, dict[str, Any]] | None,
    lr: float,
    seconds: float,
) -> dict[str, Any]:
    """An epoch's metrics.csv row from its training loss and `validation` (summed loss,
    images, `steps.scores`); an epoch that did not validate has empty validation cells and
    ``validated`` 0."""
    row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
    if validation is None:
        row.update(val_loss=None, val_dice=None, val_iou=None, val_images=0, validated=0)
    else:
        loss_sum, n, val = validation  # n: summed over processes under torchrun
        row.update(val_loss=loss_sum / max(n, 1), val_dice=val["dice"], val_iou=val["iou"],
                   val_images=n, validated=1)  # fmt: skip
    row.update(lr=lr, seconds=seconds)
    if validation is not None:
        row.update({f"dice_{name}": v for name, v in validation[2]["per_class"].items()})
    return row


@dataclass
class Progress:
    """What the epochs so far decided; ``last.pt`` carries it across --resume."""

    start_epoch: int = 1
    best_dice: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_per_class: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  #: this invocation's epochs
    within: dict[str, Any] | None = None  #: a checkpoint saved within `start_epoch`: its tally

    def record(self, row: dict[str, Any], per_class: dict[str, float] | None) -> bool:
        """Add an epoch's metrics.csv row; True when its validation Dice is the best yet
        (an epoch that did not validate, `per_class` None, changes neither the best nor the
        count of validations without a better one)."""
        self.rows.append(row)
        if per_class is None:
            return False
        improved = self.best_epoch == 0 or row["val_dice"] > self.best_dice
        if improved:
            self.best_dice, self.best_epoch, self.bad_epochs = row["val_dice"], row["epoch"], 0
            self.best_per_class = per_class
        else:
            self.bad_epochs += 1
        return improved

    @classmethod
    def restored(cls, state: dict[str, Any], rows: list[dict[str, str]]) -> Progress:
        """The progress ``last.pt`` saved, with the metrics rows of its epochs."""
        start_epoch = int(state["epoch"]) + 1
        return cls(
            start_epoch=start_epoch,
            best_dice=float(state["best_dice"]),
            best_epoch=int(state["best_epoch"]),
            bad_epochs=int(state["bad_epochs"]),
            best_per_class=dict(state["best_per_class"]),
            rows=[r for r in rows if int(r["epoch"]) < start_epoch],
            within=state.get("within"),
        )


@dataclass
class Setup:
    """What `fit` decided before anything is written."""

    dataset: Path
    out: Path  #: the run folder the user named (shown in messages)
    folder: RunFolder  #: where the run is written: `out`, or beside it until it completes
    config: TrainConfig
    class_map: ClassMap
    regions: Regions | None = None
    state: dict[str, Any] | None = None  #: ``last.pt``, on --resume
    plan: dict[str, Any] | None = None  #: the plan config.json keeps (None: not planned)
