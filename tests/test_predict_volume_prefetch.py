"""predict on volumes reads case k+1 while the model predicts case k: a stand-in engine, at
each case, waits for the next case's read to have started (an event the reader sets; the
wait's timeout only ends a broken run), and never finds a read two cases ahead.
`core.parallel.read_ahead`, which does it, keeps the order and raises a read's error when
the caller reaches that item."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import segtool.predict.volumes as volumes_module
from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.parallel import read_ahead
from segtool.predict.predictor import Predictor
from segtool.predict.volumes import predict_volumes
from tests.volumes import CHANNELS, LABELS, make_msd

CASES = 4
#: Only a broken read-ahead waits this long (the next read never starts).
NEVER = 10.0


def _predictor() -> Predictor:
    """A stand-in model of a run trained on volumes (the engine is stood in for too)."""
    settings = {"channels": list(CHANNELS), "axis": "axial"}
    run = SimpleNamespace(volume_settings=lambda: settings)
    return Predictor(torch.nn.Identity(), make_class_map(list(LABELS)), run=run)  # type: ignore[arg-type]


def test_the_next_case_is_read_while_the_model_predicts(tmp_path, monkeypatch):
    root = make_msd(tmp_path / "mri", n=1, test=CASES)
    started = [threading.Event() for _ in range(CASES)]
    names = sorted(p.name.removesuffix(".nii.gz") for p in (root / "imagesTs").iterdir())
    load = volumes_module.load_case

    def marked(case, channels):
        started[names.index(case.case)].set()
        return load(case, channels)

    next_read, two_ahead = [], []

    def stand_in(engine, volume, axis, *rest):
        k = len(next_read)
        next_read.append(k + 1 == CASES or started[k + 1].wait(NEVER))
        two_ahead.append(k + 2 < CASES and started[k + 2].is_set())
        return np.zeros(volume.image.shape[:3], np.uint8), None

    monkeypatch.setattr(volumes_module, "load_case", marked)
    monkeypatch.setattr(volumes_module, "predict_volume", stand_in)
    report = predict_volumes(_predictor(), root, tmp_path / "out", device="cpu")
    assert report.n_images == CASES == len(next_read)
    assert all(next_read)  # case k+1's read started before case k's prediction ended
    assert not any(two_ahead)  # and never more than one case ahead
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{n}.nii.gz" for n in names]


def test_a_case_that_cannot_be_read_fails_when_its_turn_comes(tmp_path, monkeypatch):
    root = make_msd(tmp_path / "mri", n=1, test=3)
    (sorted((root / "imagesTs").iterdir())[1]).write_bytes(b"not a volume")
    predicted = []

    def stand_in(engine, volume, axis, *rest):
        predicted.append(volume)
        return np.zeros(volume.image.shape[:3], np.uint8), None

    monkeypatch.setattr(volumes_module, "predict_volume", stand_in)
    with pytest.raises(SegtoolError, match="BRATS_501"):
        predict_volumes(_predictor(), root, tmp_path / "out", device="cpu")
    assert len(predicted) == 1  # the first case was predicted, then the error
    assert not (tmp_path / "out").exists()  # and nothing half-written


def test_read_ahead_keeps_the_order_and_reads_each_item_once():
    reads = []

    def read(item):
        reads.append(item)
        if item == "bad":
            raise ValueError(item)
        return item.upper()

    assert list(read_ahead(["a", "b", "c"], read)) == ["A", "B", "C"]
    assert reads == ["a", "b", "c"] and list(read_ahead([], read)) == []
    items = read_ahead(["x", "bad", "y"], read)
    assert next(items) == "X"
    with pytest.raises(ValueError, match="bad"):
        next(items)
