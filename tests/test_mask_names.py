"""Mask folders without names: ``--names FILE``, CamVid's and VOC's conventional names where
the folder says which (and only then), no empty background class invented, and
``--background-scored``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segtool.core.errors import SegtoolError
from segtool.evaluate.report import evaluate_dirs
from segtool.rasterize.import_masks import import_masks
from segtool.sources.maskconventions import CAMVID_CLASSES
from tests.cli import invoke
from tests.conftest import write_image
from tests.test_import_masks import expected_ids, pair, put_mask, read

RNG = np.random.default_rng(11)
CAMVID = [name for name, _ in CAMVID_CLASSES]


def _camvid(root: Path, rgb: bool = False) -> np.ndarray:
    """SegNet's CamVid layout: train/ + trainannot/, val/ + valannot/; label ids 0..11."""
    ids = RNG.integers(0, 12, (6, 5, 7)).astype(np.uint8)
    for i, mask in enumerate(ids):
        split = "train" if i < 4 else "val"
        write_image(root / split / f"f{i}.png", 7, 5)
        colours = np.array([c for _, c in CAMVID_CLASSES] + [(0, 0, 0)], np.uint8)
        put_mask(root / f"{split}annot" / f"f{i}.png", colours[mask] if rgb else mask)
    return ids


def test_names_file_names_values_without_inventing_a_background(tmp_path):
    values = RNG.integers(0, 12, (5, 6)).astype(np.uint8)
    pair(tmp_path / "src", "a", values)
    names = tmp_path / "names.txt"
    names.write_text("# CamVid, value 0 first\n" + "\n".join(CAMVID) + "\n__ignore__\n")
    report = import_masks(tmp_path / "src", None, tmp_path / "out", names=names, jobs=1)
    assert report.class_map.names == tuple(CAMVID)  # Sky stays id 0: no _background_ added
    assert report.class_map.background_scored
    table = {v: v for v in range(11)} | {11: 255}
    np.testing.assert_array_equal(read(tmp_path / "out/masks/a.png"), expected_ids(values, table))
    assert json.loads((tmp_path / "out/classes.json").read_text())["background_scored"] is True


def test_camvid_folder_gets_camvid_names_and_says_why(tmp_path):
    root = tmp_path / "CamVid"
    ids = _camvid(root)
    report = import_masks(root, None, tmp_path / "out", jobs=1)
    assert report.class_map.names == tuple(CAMVID)
    assert "CamVid's 11 classes" in report.names_from and "trainannot" in report.names_from
    np.testing.assert_array_equal(
        read(tmp_path / "out/masks/f0.png"), np.where(ids[0] == 11, 255, ids[0])
    )
    colours = json.loads((tmp_path / "out/classes.json").read_text())["classes"]
    assert colours[0]["color"] == [128, 128, 128]  # SegNet's sky
    assert report.split is not None and len(report.split["train"]) == 4


def test_the_same_tree_under_another_name_is_not_guessed(tmp_path):
    _camvid(tmp_path / "roads")
    with pytest.raises(SegtoolError, match="name each value"):
        import_masks(tmp_path / "roads", None, tmp_path / "out", jobs=1)


def test_camvid_colour_masks_use_the_colour_table_the_folder_ships(tmp_path):
    root = tmp_path / "CamVid"
    ids = _camvid(root, rgb=True)
    lines = [f"{r} {g} {b}\t{name}" for name, (r, g, b) in CAMVID_CLASSES] + ["0 0 0\tVoid"]
    (root / "label_colors.txt").write_text("\n".join(lines) + "\n")
    report = import_masks(root, None, tmp_path / "out", jobs=1)
    assert "label_colors.txt" in report.names_from
    assert report.class_map.names == (*CAMVID, "Void")
    np.testing.assert_array_equal(read(tmp_path / "out/masks/f1.png"), ids[1])


def test_background_scored_option_marks_id_0_a_class_evaluate_scores(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:5, 1:6] = 255
    pair(tmp_path / "src", "a", mask)
    args = ["import-masks", tmp_path / "src/images", tmp_path / "src/masks", tmp_path / "ds"]
    result = invoke([*args, "--background-scored"])
    assert result.exit_code == 0, result.output
    assert "is a class of its own" in result.output
    masks = tmp_path / "ds/masks"
    summary = evaluate_dirs(masks, masks, jobs=1, out=tmp_path / "ev").summary
    assert list(summary["per_class"]) == ["_background_", "foreground"]


def test_isbi_polarity_membrane_is_0(tmp_path):
    """ISBI 2012: 255 is the cell interior, 0 the membrane; naming 0 makes it class 0, scored."""
    mask = np.full((6, 8), 255, np.uint8)
    mask[:, 3] = 0
    pair(tmp_path / "src", "a", mask)
    report = import_masks(
        tmp_path / "src", None, tmp_path / "out", values="0=membrane,255=cell", jobs=1
    )
    assert report.class_map.names == ("membrane", "cell") and report.class_map.background_scored
    np.testing.assert_array_equal(read(tmp_path / "out/masks/a.png"), (mask == 255).astype(int))


def test_one_class_table_at_a_time(tmp_path):
    pair(tmp_path / "src", "a", np.zeros((4, 4), np.uint8))
    (tmp_path / "names.txt").write_text("sky\n")
    args = ["import-masks", tmp_path / "src/images", tmp_path / "src/masks", tmp_path / "ds"]
    result = invoke([*args, "--values", "0=sky", "--names", tmp_path / "names.txt"])
    assert result.exit_code == 2 and "--names: not allowed with --values" in result.output


def test_the_command_says_where_conventional_names_came_from(tmp_path):
    """A folder named from its layout says so in the command's output (CamVid, VOC); a
    folder named by the user (--values) says nothing of the kind."""
    from tests.test_readme_recipes import make_voc

    _camvid(tmp_path / "CamVid")
    camvid = invoke(["import-masks", tmp_path / "CamVid", tmp_path / "camvid"])
    assert camvid.exit_code == 0, camvid.output
    assert "class names: CamVid's 11 classes" in camvid.output
    make_voc(tmp_path / "v")
    voc = invoke(["import-masks", tmp_path / "v/VOCdevkit/VOC2012", tmp_path / "voc"])
    assert voc.exit_code == 0, voc.output
    assert "class names: PASCAL VOC's 21 classes" in voc.output
    mask = np.zeros((6, 8), np.uint8)
    mask[2:5, 1:6] = 255
    pair(tmp_path / "src", "a", mask)
    args = ["import-masks", tmp_path / "src/images", tmp_path / "src/masks", tmp_path / "ds"]
    named = invoke([*args, "--values", "0=_background_,255=cell"])
    assert named.exit_code == 0 and "class names:" not in named.output
