"""segtool split: deterministic, stable as the dataset grows, fractions checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.dataset import find_pairs, read_split
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.split.assign import make_split, split_dataset
from tests.cli import invoke

CMAP = make_class_map(["_background_", "cat"])


def make_dataset(root, stems):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    CMAP.save(root / "classes.json")
    for i, stem in enumerate(stems):
        (root / "images" / f"{stem}.jpg").write_bytes(b"x")
        write_mask(root / "masks" / f"{stem}.png", np.full((2, 3), i % 2, dtype=np.uint8), CMAP)


def test_split_is_deterministic_and_covers_every_stem():
    stems = [f"img{i:03d}" for i in range(200)]
    a, b = make_split(stems, 0.2, 0.1, seed=5), make_split(list(reversed(stems)), 0.2, 0.1, seed=5)
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == stems
    assert 20 <= len(a["val"]) <= 60 and 5 <= len(a["test"]) <= 35
    assert make_split(stems, 0.2, 0.1, seed=6) != a


def test_adding_images_never_moves_old_ones():
    old = make_split([f"a{i}" for i in range(100)], seed=1)
    new = make_split([f"a{i}" for i in range(100)] + [f"b{i}" for i in range(50)], seed=1)
    for name in ("train", "val", "test"):
        assert set(old[name]) <= set(new[name])


@pytest.mark.parametrize(("val", "test"), [(0.6, 0.4), (-0.1, 0.2), (0.5, 0.7)])
def test_bad_fractions(tmp_path, val, test):
    make_dataset(tmp_path, ["a", "b"])
    with pytest.raises(SegtoolError, match="sum to less than 1"):
        split_dataset(tmp_path, val=val, test=test)
    assert not (tmp_path / "split.json").exists()


def test_split_dataset_writes_and_refuses_overwrite(tmp_path):
    make_dataset(tmp_path, [f"s{i}" for i in range(30)])
    result = split_dataset(tmp_path, seed=3, jobs=1)
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["seed"] == 3 and doc == result.split
    assert read_split(tmp_path / "split.json", {f"s{i}" for i in range(30)}) == doc
    assert sum(p.sum() for p in result.pixels.values()) == 30 * 6
    with pytest.raises(SegtoolError, match="already exists; pass --overwrite"):
        split_dataset(tmp_path)


def test_read_split_rejects_unknown_stems(tmp_path):
    (tmp_path / "split.json").write_text('{"seed": 0, "train": ["ghost"], "val": [], "test": []}')
    with pytest.raises(SegtoolError, match=r"not in the dataset, e\.g\. .ghost."):
        read_split(tmp_path / "split.json", {"real"})


def test_find_pairs_reports_unpaired(tmp_path):
    make_dataset(tmp_path, ["a", "b"])
    (tmp_path / "images" / "lonely.png").write_bytes(b"x")
    with pytest.raises(SegtoolError, match=r"1 unpaired file.*lonely\.png: no mask"):
        find_pairs(tmp_path)
    pairs, skipped = find_pairs(tmp_path, skip_unpaired=True)
    assert [p.stem for p in pairs] == ["a", "b"] and len(skipped) == 1


def test_cli_prints_counts_and_class_share(tmp_path):
    make_dataset(tmp_path, [f"s{i}" for i in range(20)])
    result = invoke(["split", str(tmp_path), "--val", "0.2", "--test", "0.2", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "train" in result.stdout and "cat" in result.stdout and "%" in result.stdout
    again = invoke(["split", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = invoke(["split", str(tmp_path), "--val", "0.9", "--test", "0.2", "--overwrite"])
    assert bad.exit_code == 1 and "sum to less than 1" in bad.stderr


def test_volume_folder_splits_cases_and_counts_voxels(tmp_path):
    from tests.volumes import SHAPE, make_msd

    root = make_msd(tmp_path / "mri", n=8, test=0)
    result = split_dataset(root, val=0.25, test=0.25, seed=2, jobs=1)
    cases = [f"BRATS_{i:03d}" for i in range(8)]
    assert result.split == make_split(cases, 0.25, 0.25, seed=2)
    assert sorted(result.split["train"] + result.split["val"] + result.split["test"]) == cases
    assert result.class_map.names == ("background", "edema", "core")
    total = sum(v.sum() for v in result.pixels.values())
    assert total == 8 * SHAPE[0] * SHAPE[1] * SHAPE[2]
    out = invoke(["split", str(root), "--overwrite", "-j", "1"])
    assert out.exit_code == 0, out.output
    assert "cases" in out.output and "edema" in out.output


def test_volume_folder_split_checks_cases_first(tmp_path):
    from tests.volumes import make_case, make_msd, save

    root = make_msd(tmp_path / "mri", n=3, test=0)
    image, _ = make_case(0)
    save(root / "imagesTr" / "BRATS_001.nii.gz", image[..., :1])
    out = invoke(["split", str(root), "-j", "1"])
    assert out.exit_code == 1
    assert "BRATS_001.nii.gz: 1 channels" in out.output
    assert not (root / "split.json").exists()
