"""Training checks what its splits hold before the first step (issue: a model chosen on
nothing): a validation split with no scored class is refused, and a class that training
cannot learn is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.train.loop import fit
from tests.cli import invoke
from tests.test_train import FAST

CMAP = make_class_map(["_background_", "road", "sign", "tree"])


def make(root, holds: dict[str, list[int]], split: dict[str, list[str]]):
    """A dataset whose image `stem` holds the classes `holds[stem]`, with `split`."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    CMAP.save(root / "classes.json")
    for i, (stem, ids) in enumerate(holds.items()):
        mask = np.zeros((32, 32), np.uint8)
        for j, c in enumerate(ids):
            mask[4 * j : 4 * j + 4, i % 8 : i % 8 + 8] = c
        write_mask(root / "masks" / f"{stem}.png", mask, CMAP)
        Image.fromarray(np.full((32, 32, 3), 40 * (i % 6), np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
    (root / "split.json").write_text(json.dumps({"seed": 0, "test": [], **split}))
    return root


def test_a_validation_split_without_a_scored_class_is_refused(tmp_path):
    holds = {f"t{i}": [1, 2] for i in range(4)} | {"v0": [], "v1": []}
    data = make(tmp_path / "ds", holds, {"train": ["t0", "t1", "t2", "t3"], "val": ["v0", "v1"]})
    with pytest.raises(SegtoolError, match="none of the 2 validation images holds a class"):
        fit(data, tmp_path / "run", epochs=1, **FAST)
    assert not (tmp_path / "run").exists()
    result = invoke(["train", data, "--out", tmp_path / "run", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 1 and "the best epoch would be chosen on nothing" in result.stderr
    assert not (tmp_path / "run").exists()


def test_classes_training_cannot_learn_are_named(tmp_path):
    holds = {f"t{i}": [1] for i in range(4)} | {"v0": [1, 2], "v1": [1]}
    data = make(tmp_path / "ds", holds, {"train": ["t0", "t1", "t2", "t3"], "val": ["v0", "v1"]})
    out = tmp_path / "run"
    args = ["train", data, "--out", out, "--epochs", "1", "--workers", "0", "--size", "32"]
    result = invoke([*args, "--encoder", "resnet18", "--batch-size", "4", "--augment", "none"])
    assert result.exit_code == 0, result.output
    assert "no training image holds sign (only validation images do)" in result.stderr
    assert "no training or validation image holds tree" in result.stderr
    assert "road" not in result.stderr.split("holds", 1)[1].split("\n")[0]
