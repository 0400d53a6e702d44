"""What training and the other commands show: progress lines when the output is not a
terminal, tables readable at 80 columns with 20 classes, curves with a panel per kind."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from segtool.cli.evaluate import print_summary
from segtool.cli.train_progress import RichReporter, TimeLeft, duration, plan_table
from segtool.train.curves import curves_figure
from tests.cli import invoke

#: 20 classes whose names share long prefixes: truncation would make them look alike.
NAMES = [f"front_left_{part}_{i}" for i in range(4) for part in ("door", "wheel", "mirror", "lamp", "handle")]  # fmt: skip


def _console(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, force_terminal=False, color_system=None), buffer


def test_progress_lines_when_the_output_is_not_a_terminal():
    console, buffer = _console()
    now = [1000.0]
    reporter = RichReporter(console, line_every=30, now=lambda: now[0])
    reporter.epoch_start(1, 4, 10)
    for step in range(1, 11):
        now[0] += 7.0  # a step every 7 s: a line at 35 s and at 70 s
        reporter.batch(step, 0.5 / step, 12.0)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("epoch 1/4")]
    assert len(lines) == 2
    # 5 steps in 35 s: 70 s an epoch, 35 s left in this one, 3 more epochs: 245 s = 4m05s.
    assert lines[0] == "epoch 1/4  step 5/10  loss 0.1000  12.0 img/s  4m05s left"
    assert lines[1].startswith("epoch 1/4  step 10/10")


def test_slow_steps_give_a_progress_line_every_30_s_not_every_ten_steps():
    """Steps of 13.5 s (a busy machine): training reports every step, so a line comes at
    each 30 s (steps 3, 6, 9, ...), not only where the loss is read (every 10 steps, 135 s)."""
    import torch

    from segtool.train.steps import train_one_epoch

    console, buffer = _console()
    now = [0.0]
    reporter = RichReporter(console, line_every=30, now=lambda: now[0])
    run = SimpleNamespace(
        hardware=SimpleNamespace(device=torch.device("cpu")),
        learner=SimpleNamespace(train_model=torch.nn.Identity()),
    )

    def step(batch):
        now[0] += 13.5
        return torch.tensor(0.5)

    reporter.epoch_start(1, 1, 20)
    train_one_epoch(run, [{"image": torch.zeros(2, 1)}] * 20, step, reporter=reporter)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("epoch 1/1  step")]
    assert [line.split()[3] for line in lines] == [
        "3/20",
        "6/20",
        "9/20",
        "12/20",
        "15/20",
        "18/20",
    ]


def test_a_phase_gets_its_line():
    console, buffer = _console()
    RichReporter(console).phase("timing the first steps")
    assert buffer.getvalue() == "timing the first steps\n"


def test_no_progress_lines_on_a_terminal(monkeypatch):
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True)
    reporter = RichReporter(console, line_every=0)
    reporter.epoch_start(1, 2, 3)
    reporter.batch(1, 0.3, 5.0)
    reporter.progress.stop()
    assert "step 1/3" not in buffer.getvalue()


def test_time_left_with_a_budget_counts_down():
    clock = TimeLeft(budget=100.0, now=50.0)
    assert clock.seconds(done=3, now=80.0) == 70.0


def test_time_left_from_finished_epochs():
    clock = TimeLeft(now=0.0)
    clock.epoch_seconds = [10.0, 12.0]
    clock.epoch, clock.epochs, clock.batches, clock.epoch_started = 3, 5, 8, 100.0
    assert clock.seconds(done=2, now=104.0) == pytest.approx(7 + 2 * 11)


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (75, "1m15s"), (3725, "1h02m")])
def test_durations(seconds, text):
    assert duration(seconds) == text


def _fits(text: str, width: int = 80) -> None:
    """No cell cut short, and rich's table (not a title naming a long path) within `width`."""
    assert "…" not in text
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= width


def _table(text: str) -> tuple[list[str], list[str]]:
    """segtool's plain table in `text`: (its header, rule and rows; each row's first cell).
    The rule under the header sets the columns; the table ends where a line leaves them."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    rule = lines[start]
    first = rule.index("  ") if "  " in rule else len(rule)
    rows = []
    for line in lines[start + 1 :]:
        if len(line) > len(rule) or (len(line) > first and line[first : first + 2] != "  "):
            break
        rows.append(line)
    return [lines[start - 1], rule, *rows], [r[:first].strip() for r in rows if set(r) - {"-", " "}]


def _plain_fits(text: str, width: int = 80) -> list[str]:
    """segtool's plain table within `width`, no cell cut short; returns its first column."""
    assert "…" not in text
    table, names = _table(text)
    assert max(len(line) for line in table) <= width, "\n".join(table)
    return names


def test_evaluate_table_with_20_classes_at_80_columns(capsys):
    row = {"dice": 0.91234, "iou": 0.8, "precision": 0.9, "recall": 0.92, "hd95": 123.45,
           "images_with_reference": 17}  # fmt: skip
    summary = {
        "per_class": {name: row for name in NAMES},
        "mean": {**row, "image_mean_dice": 0.9},
        "pixel_accuracy": 0.97,
        "n_images": 20,
        "mean_excludes": [],
    }
    print_summary(summary, "test")
    text = capsys.readouterr().out
    column = _plain_fits(text)
    assert column[: len(NAMES)] == NAMES and column[len(NAMES) :] == ["mean, foreground"]
    assert text.count("0.9123") == 21 and text.count("123.45") == 21  # numbers never wrap


def test_plan_table_at_80_columns():
    choices = [{"option": "size", "value": "160,256", "why": "median image 1920x1080 -> " * 3},
               {"option": "decoder_channels", "value": "64,32,16,16,16", "why": "slim"}]  # fmt: skip
    console, buffer = _console()
    console.print(plan_table(choices))
    _fits(buffer.getvalue())
    assert "--decoder-channels" in buffer.getvalue() and "64,32,16,16,16" in buffer.getvalue()


def test_split_table_with_20_classes_at_80_columns(tmp_path):
    from segtool.core.classes import make_class_map
    from segtool.core.masks import write_mask

    cmap = make_class_map(["_background_", *NAMES])
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    from PIL import Image

    for i in range(10):
        Image.new("RGB", (21, 4)).save(tmp_path / "images" / f"s{i}.png")
        write_mask(tmp_path / "masks" / f"s{i}.png", np.arange(21 * 4).reshape(4, 21) % 21, cmap)
    cmap.save(tmp_path / "classes.json")
    result = invoke(["split", str(tmp_path)])
    assert result.exit_code == 0, result.output
    column = _plain_fits(result.stdout)
    assert column == ["images", "_background_", *NAMES]
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 0


def test_curves_have_a_panel_per_kind_and_distinct_class_colours():
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.5, "val_iou": 0.4,
         **{f"dice_{n}": (e + i) / 30 for i, n in enumerate(NAMES)}}
        for e in range(1, 4)
    ]  # fmt: skip
    fig = curves_figure(rows)
    loss, mean, per_class = fig.axes[:3]
    assert [line.get_label() for line in loss.get_lines()] == ["train loss", "validation loss"]
    assert [line.get_label() for line in mean.get_lines()] == ["mean Dice", "mean IoU"]
    lines = per_class.get_lines()
    assert [line.get_label() for line in lines] == NAMES
    assert len({tuple(line.get_color()) for line in lines}) == 20


def test_the_default_progress_interval_is_the_one_the_docs_state():
    """docs/train.md promises a progress line every N s in a log; a reporter made without an
    interval (as `segtool train` makes it) gives one each time N s have passed."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "train.md").read_text()
    every = int(re.search(r"a line every (\d+) s \(however long a step takes\)", docs)[1])
    console, buffer = _console()
    now = [0.0]
    reporter = RichReporter(console, now=lambda: now[0])
    reporter.epoch_start(1, 1, 100)
    times = []
    for step in range(1, 101):
        now[0] += 1.0  # a step a second: a line each `every` steps
        before = buffer.getvalue().count("\n")
        reporter.batch(step, 0.5, 4.0)
        if buffer.getvalue().count("\n") > before:
            times.append(now[0])
    assert times == [float(every * k) for k in range(1, 100 // every + 1)]
