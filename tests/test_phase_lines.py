"""A long phase prints one line when the output is not a terminal (a log file has no progress
bar): "rasterizing 3 files", "predicting 16 images", "scoring 16 ... pairs", for every command
through one mechanism (`cli.common.progress_bar`), on an injected clock; the commands run here
as a shell runs them with stderr sent to a file, which is not a terminal."""

from __future__ import annotations

import numpy as np
import pytest

from segtool.cli import common
from segtool.cli.common import PHASE_LINE_AFTER, phase_lines
from segtool.core.parallel import with_progress
from tests.cli import invoke
from tests.conftest import shape, write_labelme
from tests.synthetic import make_dataset
from tests.test_import_masks import pair


def _phase_lines(stderr: str, start: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(start)]


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_phase_gets_one_line_and_a_short_one_none(capsys):
    clock = Clock()
    update = phase_lines({"rasterize": "annotation files"}, clock)
    update("rasterize", 0, 3)  # the phase starts
    clock.now = PHASE_LINE_AFTER - 0.1
    update("rasterize", 1, 3)
    assert capsys.readouterr().err == ""  # not long yet
    clock.now = PHASE_LINE_AFTER
    update("rasterize", 2, 3)
    assert capsys.readouterr().err == "rasterizing 3 annotation files\n"
    update("rasterize", 3, 3)
    assert capsys.readouterr().err == ""  # one line a phase
    update("predict", 0, 1234)  # a phase done within the time prints nothing
    clock.now += PHASE_LINE_AFTER
    update("predict", 1234, 1234)
    assert capsys.readouterr().err == ""


def test_the_line_can_come_before_the_first_item(capsys, monkeypatch):
    """Long loops report done 0 as they start: the line is not held until an item is done."""
    monkeypatch.setattr(common, "PHASE_LINE_AFTER", 0.0)
    seen = []

    def items():
        for i in range(3):
            seen.append(capsys.readouterr().err)  # what stderr held as each item was made
            yield i

    assert list(with_progress(items(), "check", 3, phase_lines())) == [0, 1, 2]
    assert seen == ["checking 3 files\n", "", ""]


@pytest.fixture
def long_phases(monkeypatch):
    """Every phase counts as long (on this tiny data each takes well under a second)."""
    monkeypatch.setattr(common, "PHASE_LINE_AFTER", 0.0)


def test_rasterize_says_so(tmp_path, long_phases):
    for stem in ("a", "b", "c"):
        write_labelme(tmp_path / "ann", stem, [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = invoke(["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "rasterizing") == ["rasterizing 3 files"]


def test_import_masks_and_split_say_so(tmp_path, long_phases):
    for stem in ("a", "b", "c", "d"):
        pair(tmp_path / "src", stem, np.array([[0, 255, 255], [0, 0, 255]], np.uint8))
    src = tmp_path / "src"
    result = invoke(["import-masks", str(src / "images"), str(src / "masks"),
                     str(tmp_path / "ds"), "-j", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "importing") == ["importing 4 image/mask pairs"]
    result = invoke(["split", str(tmp_path / "ds"), "--val", "1", "--test", "1", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "measuring") == ["measuring 4 masks"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from segtool.train.loop import fit

    root = tmp_path_factory.mktemp("phases")
    dataset = make_dataset(root / "ds")
    fit(dataset, root / "run", epochs=1, encoder="resnet18", workers=0, batch_size=4,
        augment="none", size=32)  # fmt: skip
    return dataset, root / "run"


def test_predict_and_evaluate_say_so(trained, tmp_path, long_phases):
    dataset, run = trained
    pred = tmp_path / "pred"
    result = invoke(["predict", str(run), str(dataset / "images"), str(pred), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "predicting") == ["predicting 16 images"]
    result = invoke(["evaluate", str(pred), str(dataset / "masks"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "scoring") == ["scoring 16 prediction/reference pairs"]
    result = invoke(["evaluate", "--model", str(run), str(dataset), "--split", "val",
                     "-j", "1", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _phase_lines(result.stderr, "predicting") == [
        f"predicting 4 images of {dataset}'s val split"
    ]


def test_train_says_each_phase_before_the_first_epoch_and_the_fitted_epochs(tmp_path, monkeypatch):
    """A budgeted run on a clock that moves only as it works (tests.test_budget.Machine):
    "measuring" before the plan, "timing the first steps" before epoch 1's steps, and the
    epochs that fit once they are timed, before epoch 2; a resumed run measures nothing."""
    from segtool.train.loop import fit
    from segtool.train.steps import Reporter
    from tests.test_budget import SMALL, Machine

    class Recorder(Reporter):
        def __init__(self) -> None:
            self.events: list[str] = []

        def phase(self, text: str) -> None:
            self.events.append(text)

        def plan(self, choices) -> None:
            self.events.append("<plan>")

        def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
            self.events.append(f"<epoch {epoch}>")

    dataset = make_dataset(tmp_path / "ds")
    Machine(step=1.0).install(monkeypatch)
    seen = Recorder()
    done = fit(dataset, tmp_path / "run", time_budget=40, clock=0.0, reporter=seen, **SMALL)
    events = seen.events
    measuring = [i for i, e in enumerate(events) if e.startswith("measuring ")]
    timing = [i for i, e in enumerate(events) if e.startswith("timing the first steps")]
    fitted = [i for i, e in enumerate(events) if "a step" in e and "fit the 40s budget" in e]
    assert measuring == [0] and events[1] == "<plan>"
    assert len(timing) == 1 and timing[0] < events.index("<epoch 1>")
    assert len(fitted) == 1 and events.index("<epoch 1>") < fitted[0] < events.index("<epoch 2>")
    again = Recorder()
    fit(dataset, tmp_path / "run", resume=True, epochs=done.epochs_done + 1, reporter=again)
    assert [e for e in again.events if e[0] != "<"] == []  # no phase: nothing to measure
    assert again.events[-1] == f"<epoch {done.epochs_done + 1}>"
