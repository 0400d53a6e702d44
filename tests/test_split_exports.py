"""rasterize on exports split into one file per split folder (VIA's balloon layout): every
split's images in one dataset, the folders' split kept in split.json."""

from __future__ import annotations

import json

import pytest

from segtool.core.errors import SegtoolError
from segtool.rasterize.folder import rasterize_dir
from tests.cli import invoke
from tests.test_readme_recipes import _via_doc, make_coco, make_via_splits


def test_each_split_folder_keeps_its_images(tmp_path):
    make_via_splits(tmp_path)
    report = rasterize_dir(tmp_path / "balloon", tmp_path / "ds", jobs=1)
    split = json.loads((tmp_path / "ds/split.json").read_text())
    for name in ("train", "val"):
        folder = tmp_path / "balloon" / name
        assert split[name] == sorted(p.stem for p in folder.glob("*.png")), name
    assert split["test"] == [] and split["seed"] is None and "balloon" in split["source"]
    assert report.split == {"train": 9, "val": 3, "test": 0}
    assert len(list((tmp_path / "ds/masks").glob("*.png"))) == 12


def test_the_cli_says_the_split_was_kept(tmp_path):
    make_via_splits(tmp_path)
    result = invoke(["rasterize", tmp_path / "balloon", tmp_path / "ds"])
    assert result.exit_code == 0, result.output
    assert "kept in" in result.output and "train 9, val 3, test 0" in result.output


def test_an_image_in_two_splits_is_refused(tmp_path):
    make_via_splits(tmp_path)
    val = tmp_path / "balloon" / "val"
    train_doc = json.loads((tmp_path / "balloon/train/via_region_data.json").read_text())
    first = next(iter(train_doc.values()))["filename"]
    (val / first).write_bytes((tmp_path / "balloon/train" / first).read_bytes())
    doc = json.loads((val / "via_region_data.json").read_text()) | _via_doc([first])
    (val / "via_region_data.json").write_text(json.dumps(doc))
    with pytest.raises(SegtoolError, match=f"image '{first}' has the mask name of one in"):
        rasterize_dir(tmp_path / "balloon", tmp_path / "ds", jobs=1)
    assert not (tmp_path / "ds").exists()


def test_split_folders_of_different_formats_are_refused(tmp_path):
    make_via_splits(tmp_path)
    make_coco(tmp_path / "coco")
    (tmp_path / "balloon/val/via_region_data.json").unlink()
    (tmp_path / "coco/annotations/instances_default.json").rename(
        tmp_path / "balloon/val/instances.json"
    )
    with pytest.raises(SegtoolError, match="exports of different formats"):
        rasterize_dir(tmp_path / "balloon", tmp_path / "ds", jobs=1)


def test_a_single_split_folder_is_not_a_split_layout(tmp_path):
    make_via_splits(tmp_path)
    result = invoke(["rasterize", tmp_path / "balloon/train", tmp_path / "ds"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "ds/split.json").exists()
