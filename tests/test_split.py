"""segtool split: deterministic, stable as the dataset grows, fractions checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segtool.core.classes import make_class_map
from segtool.core.dataset import find_pairs, read_split
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.split.assign import _unit, make_split, split_dataset
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


# Exact counts, strata by class presence, and the warnings split prints.

from segtool.split.amounts import apportion, counts, strata  # noqa: E402


@pytest.mark.parametrize(
    ("amount", "sizes", "expected"),
    [
        (3, [9, 6, 3], [2, 1, 0]),  # exact shares 1.5, 1.0, 0.5: the first remainder wins
        (4, [9, 6, 3], [2, 1, 1]),  # 2.0, 1.33, 0.67: the largest remainder
        (5, [1, 1, 10], [1, 0, 4]),  # 0.42, 0.42, 4.17: floors 0, 0, 4; one left: a tie, the first
        (2, [1, 0, 1], [1, 0, 1]),
        (0, [4, 4], [0, 0]),
    ],
)
def test_apportion_by_largest_remainder(amount, sizes, expected):
    assert apportion(amount, sizes) == expected
    assert sum(expected) == amount


def test_counts_round_fractions_half_up_and_take_counts_as_given():
    assert counts(18, 0.15, 0.15) == (3, 3)  # 2.7 -> 3
    assert counts(18, 6, 0.25) == (6, 5)  # 4.5 -> 5
    with pytest.raises(SegtoolError, match="take 18 of 18 images and leave none"):
        counts(18, 9, 9)


def test_strata_are_the_rarest_class_held():
    presence = {"a": [1], "b": [1, 2], "c": [1, 2, 3], "d": [], "e": [3]}
    # class 1: 3 images, class 2: 2, class 3: 2 (tie: the lower id)
    assert strata(presence) == {"a": "1", "b": "2", "c": "2", "d": "", "e": "3"}


@pytest.mark.parametrize("val", [1.5, float("inf"), -1.0, 0.99])
def test_an_amount_is_a_fraction_or_a_whole_count(val):
    with pytest.raises(SegtoolError, match=r"--val|sum to less than 1"):
        make_split([f"s{i}" for i in range(30)], val, 0.1)


def test_exact_counts_are_exact_and_fixed_by_the_seed():
    stems = [f"img{i:02d}" for i in range(18)]
    a = make_split(stems, 6, 6, seed=1)
    assert [len(a[n]) for n in ("train", "val", "test")] == [6, 6, 6]
    assert sorted(a["train"] + a["val"] + a["test"]) == stems
    assert a == make_split(list(reversed(stems)), 6, 6, seed=1)
    assert a != make_split(stems, 6, 6, seed=2)
    # the counts take the stems in the hash order the fractions use: the lowest hash is test
    b = make_split(stems, 1, 0.0, seed=1)
    lowest = min(stems, key=lambda s: _unit(1, s))
    assert b["val"] == [lowest] and b["test"] == []


def test_stratify_shares_each_class_out_in_proportion():
    stems = [f"s{i:02d}" for i in range(40)]
    rare = set(stems[::5])  # 8 images hold the rare class 2, all hold class 1
    groups = strata({s: [1, 2] if s in rare else [1] for s in stems})
    for seed in range(5):
        split = make_split(stems, 0.25, 0.25, seed, groups)
        # 10 val and 10 test; the rare group's share of each: 8 * 10 / 40 = 2 exactly
        assert [len(split[n]) for n in ("val", "test")] == [10, 10]
        assert [len(rare & set(split[n])) for n in ("train", "val", "test")] == [4, 2, 2]


def test_split_dataset_stratifies_and_warns(tmp_path):
    cmap = make_class_map(["_background_", "road", "sign"])
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cmap.save(tmp_path / "classes.json")
    for i in range(25):
        mask = np.ones((4, 4), dtype=np.uint8)
        if i % 10 == 0:  # three images hold the rare sign
            mask[0, 0] = 2
        (tmp_path / "images" / f"s{i:02d}.jpg").write_bytes(b"x")
        write_mask(tmp_path / "masks" / f"s{i:02d}.png", mask, cmap)
    result = split_dataset(tmp_path, val=2, test=2, stratify=True, jobs=1)
    assert [len(result.split[n]) for n in ("train", "val", "test")] == [21, 2, 2]
    # proportionally the sign's share of 2 is 2 * 3 / 25 = 0.24, rounded to none; its group
    # can spare one for test and one for val and still train on one, so it gets them
    assert [int(result.pixels[n][2]) for n in ("train", "val", "test")] == [1, 1, 1]
    assert result.notes == []
    plain = split_dataset(tmp_path, val=1, test=2, seed=0, overwrite=True, jobs=1)
    assert "the val split holds 1 of 25 images (4.0%)" in " ".join(plain.notes)
    assert "the test split holds" not in " ".join(plain.notes)  # 8 % is enough
    missing = [n for n in ("val", "test") if not plain.pixels[n][2]]
    assert missing  # seed 0 leaves the sign out of val or test (checked, not assumed)
    for part in missing:  # without --stratify the hash may leave the sign out; then it says so
        assert f"no {part} image holds 'sign'; --stratify" in " ".join(plain.notes)


def test_cli_takes_counts_and_stratify(tmp_path):
    make_dataset(tmp_path, [f"s{i:02d}" for i in range(20)])
    result = invoke(["split", tmp_path, "--val", "3", "--test", "2", "--stratify", "-j", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "split.json").read_text())
    assert [len(doc[n]) for n in ("train", "val", "test")] == [15, 3, 2]
    bad = invoke(["split", tmp_path, "--val", "2.5", "--overwrite"])
    assert bad.exit_code == 1 and "--val 2.5: give a fraction below 1" in bad.stderr


def test_cli_prints_each_splits_count_and_warns_of_a_small_one(tmp_path):
    """The table's count of each split is the number split.json holds; a split under 5 % of
    the images (val: 1 of 30, 3.3 %) gets one warning line, a larger one (test: 3, 10 %) none."""
    make_dataset(tmp_path, [f"s{i:02d}" for i in range(30)])
    result = invoke(["split", tmp_path, "--val", "1", "--test", "3", "-j", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "split.json").read_text())
    printed = {
        cells[0]: int(cells[1])
        for cells in (line.split() for line in result.stdout.splitlines())
        if cells and cells[0] in ("train", "val", "test")
    }
    assert printed == {"train": 26, "val": 1, "test": 3}
    assert printed == {n: len(doc[n]) for n in ("train", "val", "test")}
    assert result.stderr.count("warning:") == 1
    assert "the val split holds 1 of 30 images (3.3%)" in result.stderr
