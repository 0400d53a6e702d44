"""A run's files written in the background: snapshots, order, interruption, the curves' clock."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from segtool.train import saving
from segtool.train.runfolder import RunFolder
from segtool.train.saving import Saver


def rows(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0, "val_dice": 0.5} for e in
            range(1, n + 1)]  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    return RunFolder(tmp_path / "run")


def test_a_save_writes_the_snapshot_in_the_background(folder, monkeypatch):
    """save() returns while the write waits; weights changed after it are not written."""
    started, release = threading.Event(), threading.Event()
    real = saving.save_checkpoint

    def slow(path, state):
        started.set()
        assert release.wait(30)
        real(path, state)

    monkeypatch.setattr(saving, "save_checkpoint", slow)
    model = nn.Linear(2, 2)
    saver = Saver(folder)
    saver.save(model, {"weights": model.weight, "epoch": 1}, rows(1), best=False)
    before = model.weight.detach().clone()
    assert started.wait(30) and not folder.last_checkpoint.exists()  # still writing
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch's steps
    release.set()
    saver.finish()
    state = torch.load(folder.last_checkpoint, weights_only=True)
    assert torch.equal(state["weights"], before)


def test_a_save_waits_for_the_one_before(folder, monkeypatch):
    order, first_in, release = [], threading.Event(), threading.Event()
    real = saving.save_checkpoint

    def tracked(path, state):
        order.append(("start", state["epoch"]))
        if state["epoch"] == 1:
            first_in.set()
            assert release.wait(30)
        real(path, state)
        order.append(("end", state["epoch"]))

    monkeypatch.setattr(saving, "save_checkpoint", tracked)
    saver = Saver(folder)
    saver.save(nn.Linear(1, 1), {"epoch": 1}, rows(1), best=False)
    assert first_in.wait(30)
    entered, wait = threading.Event(), saver.wait
    saver.wait = lambda: (entered.set(), wait())[1]
    second = threading.Thread(
        target=saver.save, args=(nn.Linear(1, 1), {"epoch": 2}, rows(2), False)
    )
    second.start()
    assert entered.wait(30)  # the second save is waiting on the first write
    assert order == [("start", 1)]
    release.set()
    second.join(30)
    saver.finish()
    assert order == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert torch.load(folder.last_checkpoint)["epoch"] == 2


def test_an_interrupted_write_keeps_the_last_complete_checkpoint(folder, monkeypatch):
    saver = Saver(folder)
    saver.save(nn.Linear(1, 1), {"epoch": 1}, rows(1), best=False)
    saver.finish()

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    saver.save(nn.Linear(1, 1), {"epoch": 2}, rows(2), best=False)
    with pytest.raises(KeyboardInterrupt):
        saver.finish()
    monkeypatch.undo()
    assert torch.load(folder.last_checkpoint)["epoch"] == 1
    assert sorted(p.name for p in folder.last_checkpoint.parent.iterdir()) == ["last.pt"]


def test_an_error_in_the_background_reaches_the_next_save(folder, monkeypatch):
    def full(path, state):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(saving, "save_checkpoint", full)
    saver = Saver(folder)
    saver.save(nn.Linear(1, 1), {"epoch": 1}, rows(1), best=False)
    with pytest.raises(OSError, match="No space"):
        saver.save(nn.Linear(1, 1), {"epoch": 2}, rows(2), best=False)


def test_the_best_model_is_the_snapshot(folder, monkeypatch):
    """The best model's weights as they were at save(), though the next steps change the
    model while the background thread still waits to write them."""
    from segtool.train.model import build_model, load_model

    started, release = threading.Event(), threading.Event()
    real = Saver._write

    def held(self, *args):  # the background write, held before it reads anything
        started.set()
        assert release.wait(30)
        real(self, *args)

    monkeypatch.setattr(Saver, "_write", held)
    model = build_model("unet", "resnet18", None, 2, decoder_channels=(8,) * 5)
    saver = Saver(folder)
    saver.save(model, {"epoch": 1}, rows(1), best=True)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    assert started.wait(30)  # the write has begun and waits
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the next epoch's steps
    release.set()
    saver.finish()
    saved = load_model(folder.model_dir).state_dict()
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_the_curves_are_drawn_at_most_once_a_minute(folder, monkeypatch):
    drawn = []
    monkeypatch.setattr(saving.RunFolder, "write_progress", lambda self, r, draw=True:
                        drawn.append(len(r)) if draw else None)  # fmt: skip
    now = [0.0]
    saver = Saver(folder, clock=lambda: now[0])
    for epoch, t in enumerate([0, 10, 30, 61, 70, 100, 125, 130], 1):
        now[0] = float(t)
        saver.save(nn.Linear(1, 1), {"epoch": epoch}, rows(epoch), best=False)
    saver.finish()
    # epochs 1 (t=0), 4 (t=61), 7 (t=125); then the last epoch at the end
    assert drawn == [1, 4, 7, 8]
    saver.finish()
    assert drawn == [1, 4, 7, 8]  # nothing left to draw
