"""What ``segtool train`` shows while it runs: the plan table, then a bar per epoch on a
terminal (a progress line every `LINE_EVERY` seconds when the output is a log file or a job
scheduler's), a line per epoch, and the time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from shlex import quote
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segtool.cli.common import clean, note, styled, table, warn

#: Seconds between progress lines when the output is not a terminal.
LINE_EVERY = 30.0


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plan_table(choices: list[dict[str, Any]]) -> Table:
    """The plan as a table of option, value and why (the why column wraps)."""
    table = Table(title="plan (each option given on the command line wins)", title_justify="left")
    table.add_column("option", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("why", ratio=1)
    for choice in choices:
        value = choice["value"]
        if isinstance(value, list | tuple):  # a size or decoder widths, as users type them
            value = ",".join(str(v) for v in value)
        value = "—" if value is None else str(value)
        option = "--" + choice["option"].replace("_", "-")
        table.add_row(option, escape(clean(value)), escape(clean(choice["why"])))
    return table


class TimeLeft:
    """The time a run has left, from the epochs and steps seen so far (or its budget)."""

    def __init__(self, budget: float | None = None, now: float | None = None) -> None:
        self.started = time.monotonic() if now is None else now
        self.budget = budget
        self.epoch_seconds: list[float] = []
        self.epoch = self.epochs = self.batches = 0
        self.epoch_started = self.started

    def seconds(self, done: int, now: float) -> float:
        """Seconds left after `done` steps of the current epoch."""
        if self.budget is not None:
            return self.budget - (now - self.started)
        in_epoch = now - self.epoch_started
        per_epoch = (
            sum(self.epoch_seconds) / len(self.epoch_seconds)
            if self.epoch_seconds
            else in_epoch / max(done, 1) * self.batches
        )
        rest = max(per_epoch - in_epoch, 0.0)
        return rest + per_epoch * (self.epochs - self.epoch)


class RichReporter:
    """Draws `fit`'s progress on `console`.

    Args:
        console: where to draw (stderr).
        budget: the run's time budget in seconds; None estimates the time left from the epochs.
        line_every: seconds between progress lines when `console` is not a terminal.
        started: `time.monotonic()` when the budget started counting (default: now).
        now: reads the time (``time.monotonic``; tests give their own).
    """

    def __init__(
        self,
        console: Console,
        budget: float | None = None,
        line_every: float = LINE_EVERY,
        started: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console, self.now = console, now
        self.clock = TimeLeft(budget, now() if started is None else started)
        #: what the train and val counts are (a volume folder's: cases)
        self.items = "images"
        self.line_every = line_every
        self.last_line = now()
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:.1f} img/s"),
            TextColumn("{task.fields[left]} left"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task: Any = None

    def plan(self, choices: list[dict[str, Any]]) -> None:
        self.console.print(plan_table(choices))

    def phase(self, text: str) -> None:
        self.console.print(escape(clean(text)), highlight=False)
        self.last_line = self.now()

    def start(self, info: dict[str, Any]) -> None:
        amp = f", AMP {str(info['amp']).removeprefix('torch.')}" if info["amp"] else ""
        resumed = f", resuming at epoch {info['start_epoch']}" if info["start_epoch"] > 1 else ""
        budget = f", {duration(info['time_budget'])} budget" if info.get("time_budget") else ""
        self.console.print(
            f"training on {info['device']}{amp}: {info['train']} train / {info['val']} val "
            f"{self.items}, {info['mode']} mode, {info['workers']} loader workers{resumed}{budget}",
            highlight=False,
        )
        for message in info.get("notes", []):
            warn(message)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        clock = self.clock
        clock.epoch, clock.epochs, clock.batches = epoch, epochs, batches
        clock.epoch_started = self.now()
        self.progress.start()
        self.task = self.progress.add_task(
            "", total=batches, epoch=f"{epoch}/{epochs}", loss=0.0, speed=0.0, left="?"
        )

    def batch(self, done: int, loss: float, images_per_second: float) -> None:
        now = self.now()
        left = duration(self.clock.seconds(done, now))
        self.progress.update(
            self.task, completed=done, loss=loss, speed=images_per_second, left=left
        )
        if not self.console.is_terminal and now - self.last_line >= self.line_every:
            self.last_line = now
            self.console.print(
                f"epoch {self.clock.epoch}/{self.clock.epochs}  step {done}/{self.clock.batches}"
                f"  loss {loss:.4f}  {images_per_second:.1f} img/s  {left} left",
                highlight=False,
            )

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.remove_task(self.task)
        self.progress.stop()
        self.clock.epoch_seconds.append(row["seconds"])
        self.last_line = self.now()
        per_class = [(k.removeprefix("dice_"), v) for k, v in row.items() if k.startswith("dice_")]
        # Up to 4 classes fit on the line; more would wrap it: the summary table lists them.
        classes = (
            "  (" + "  ".join(f"{escape(clean(k))} {v:.3f}" for k, v in per_class) + ")"
            if len(per_class) <= 4
            else ""
        )
        validation = (
            f"val loss {row['val_loss']:.4f}  val Dice {row['val_dice']:.4f}  "
            f"IoU {row['val_iou']:.4f}{classes}"
            if row["val_dice"] is not None
            else "(no validation this epoch: --val-every)"
        )
        self.console.print(
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  {validation}  "
            f"{row['seconds']:.1f}s",
            highlight=False,
        )


def resume_line(dataset: Path, out_dir: Path) -> str:
    """The exact command that continues the run."""
    return f"segtool train {quote(str(dataset))} --out {quote(str(out_dir))} --resume"


def how_it_ended(result: Any) -> str:
    """How the run stopped, as the summary's title says it."""
    if result.stopped != "time budget":
        return result.stopped
    text = (
        f"stopped at the time budget after {result.epochs_done} of {result.planned_epochs} "
        "planned epochs"
    )
    if result.cut:
        text += (
            f"; epoch {result.epochs_done} cut short after {result.cut[0]} of {result.cut[1]} steps"
        )
    return text


def process_start() -> float:
    """``time.monotonic()`` when this process started (on Linux, from ``/proc``; elsewhere
    now): a time budget counts the interpreter's own start-up too."""
    import os
    import time

    now = time.monotonic()
    try:
        with open("/proc/self/stat") as stat:
            line = stat.read()
        boot_now, tick = time.clock_gettime(time.CLOCK_BOOTTIME), os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return now
    return started_at(now, boot_now, line, tick)


def started_at(now: float, boot_now: float, stat_line: str, tick: int) -> float:
    """The monotonic time a process started: `now` less its age, from its ``/proc/PID/stat``
    line (field 22, start time in clock ticks since boot) and the seconds since boot, the age
    held to 0..60 s (a clock read badly must not eat a budget); `now` when the line is not
    one."""
    try:
        ticks = int(stat_line.rsplit(")", 1)[1].split()[19])
    except (ValueError, IndexError):
        return now
    return now - min(max(boot_now - ticks / tick, 0.0), 60.0)


def file_stamp(path: Path) -> tuple[int, int] | None:
    """A file's identity and modification time, None when there is none."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def print_result(result: Any, dataset: Path, out_dir: Path) -> None:
    """The best epoch's validation Dice per class; after Ctrl-C, how to resume."""
    interrupted = styled("interrupted", "yellow", sys.stderr)
    if result.stopped == "interrupted" and not result.kept:
        note(
            f"{interrupted}: the new run was not complete and is discarded; {out_dir} is as it was"
        )
        raise SystemExit(130)
    if result.stopped == "interrupted" and not (result.epochs_done or result.saved_steps):
        note(f"{interrupted} before the run's first checkpoint; nothing to resume")
        raise SystemExit(130)
    if result.best_epoch:
        rows: list = [
            [name, "—" if score != score else f"{score:.4f}"]
            for name, score in result.best_per_class.items()
        ]
        rows += [None, ["mean", f"{result.best_dice:.4f}"]]
        title = (
            f"{out_dir}: best epoch {result.best_epoch} of {result.epochs_done} "
            f"({how_it_ended(result)})"
        )
        table(title, ["class", "val Dice"], rows)
    if result.thresholds:
        cuts = result.thresholds["thresholds"]
        note(
            "per-class thresholds tuned on the validation split (predict uses them): "
            + ", ".join(f"{name} {cut:g}" for name, cut in cuts.items())
            + f"; saved in {out_dir}/thresholds.json"
        )
    if result.stopped == "interrupted":
        holds = f"epoch {result.epochs_done}" if result.epochs_done else ""
        if result.saved_steps:
            steps = f"{result.saved_steps} steps of epoch {result.epochs_done + 1}"
            holds = f"{holds} and {steps}" if holds else steps
        note(
            f"{interrupted}: {out_dir}/checkpoints/last.pt holds {holds}; continue with: "
            + resume_line(dataset, out_dir)
        )
        raise SystemExit(130)
