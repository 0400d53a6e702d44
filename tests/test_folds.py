"""K-fold splits (segtool split --folds, --group) and training on one fold (train --fold): folds
balanced and stable as the data grows, groups and cases whole, bad input one line."""

from __future__ import annotations

import json
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segtool.core.dataset import read_split
from segtool.core.errors import SegtoolError
from segtool.split.assign import _unit, split_dataset
from segtool.split.folds import FoldSpec, fold_document, fold_split
from tests.cli import invoke
from tests.test_split import make_dataset

names = st.lists(st.text("abcdefgh0123", min_size=1, max_size=6), unique=True)


def _folds(stems, k, *, seed=0, test=0.0, group=None, previous=None):
    doc, _ = fold_document(
        stems,
        FoldSpec(k, group),
        seed=seed,
        hash_of=partial(_unit, seed),
        test=test,
        previous=previous,
    )
    return doc


def _fold_of(doc) -> dict[str, int | str]:
    where: dict[str, int | str] = {s: "test" for s in doc["test"]}
    for i, stems in enumerate(doc["folds"]):
        where.update({s: i for s in stems})
    return where


@settings(max_examples=60, deadline=None)
@given(
    old=names.filter(lambda s: len(s) >= 5),
    new=names,
    k=st.integers(2, 5),
    test=st.sampled_from([0.0, 0.2, 2]),
)
def test_folds_stay_put_and_balanced_as_names_are_added(old, new, k, test):
    new = [s for s in new if s not in old]
    try:
        first = _folds(old, k, test=test)
    except SegtoolError:  # fewer names than folds once test is held out
        return
    second = _folds(old + new, k, test=test, previous=first)
    before, after = _fold_of(first), _fold_of(second)
    assert {s: after[s] for s in old} == before  # no old name moved, test ones included
    assert sorted(after) == sorted(old + new)
    for doc in (first, second):  # one name a group: sizes differ by one at most
        sizes = [len(f) for f in doc["folds"]]
        assert max(sizes) - min(sizes) <= 1, sizes
        assert doc["val"] == doc["folds"][0] and doc["fold"] == 0
        assert sorted(doc["train"]) == sorted(s for f in doc["folds"][1:] for s in f)


def test_a_fresh_split_deals_names_in_hash_order():
    stems = [f"img{i:02d}" for i in range(11)]
    doc = _folds(stems, 3, seed=4)
    ranked = sorted(stems, key=lambda s: (_unit(4, s), s))
    expected = [sorted(ranked[i::3]) for i in range(3)]  # singletons: round robin
    assert doc["folds"] == expected
    assert _folds(list(reversed(stems)), 3, seed=4) == doc
    assert _folds(stems, 3, seed=5)["folds"] != expected


def test_a_different_request_is_a_new_split():
    stems = [f"img{i:02d}" for i in range(12)]
    first = _folds(stems, 3)
    other = _folds([*stems, "zz"], 4, previous=first)
    assert other == _folds([*stems, "zz"], 4)  # another K: dealt afresh


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=4, max_size=12),
    k=st.integers(2, 4),
    seed=st.integers(0, 3),
)
def test_groups_never_straddle_folds_and_folds_balance_by_images(sizes, k, seed):
    stems = [f"P{g:02d}_{j}" for g, n in enumerate(sizes) for j in range(n)]
    doc = _folds(stems, k, seed=seed, group=r"^(P\d+)_")
    where = _fold_of(doc)
    for g in range(len(sizes)):
        assert len({where[s] for s in stems if s.startswith(f"P{g:02d}_")}) == 1
    # Largest group first into the smallest fold: the folds differ by a group's size at most.
    images = [len(f) for f in doc["folds"]]
    assert max(images) - min(images) <= max(sizes)
    assert sorted(s for f in doc["folds"] for s in f) == sorted(stems)


def test_hand_table_of_the_dealing_rule():
    # Groups of 3, 2, 2 and 1 images into 2 folds: 3 | 2, then 2 joins the smaller (2 -> 4),
    # then 1 joins the smaller (3 -> 4).
    stems = ["a_1", "a_2", "a_3", "b_1", "b_2", "c_1", "c_2", "d_1"]
    doc = _folds(stems, 2, group="^(.)_")
    assert sorted(len(f) for f in doc["folds"]) == [4, 4]
    a_fold = next(f for f in doc["folds"] if "a_1" in f)
    assert "d_1" in a_fold  # the single image joins the group of 3
    # Two single images and a group of 3: the group is dealt first, whatever the hashes
    # (in hash order, two singles first would make 4 | 1).
    for seed in range(8):
        doc = _folds(["a_1", "b_1", "c_1", "c_2", "c_3"], 2, seed=seed, group="^(.)_")
        assert sorted(len(f) for f in doc["folds"]) == [2, 3], seed


def test_test_groups_are_held_out_of_every_fold():
    stems = [f"P{g}_{j}" for g in range(10) for j in range(3)]
    doc = _folds(stems, 3, test=0.3, group=r"^(P\d)_")
    assert doc["test"], "a 0.3 test share of 10 groups holds some"
    assert {s[:2] for s in doc["test"]} == {f"P{g}" for g in range(10) if _unit(0, f"P{g}") < 0.3}
    assert not set(doc["test"]) & {s for f in doc["folds"] for s in f}
    counted = _folds(stems, 3, test=2, group=r"^(P\d)_")
    ranked = sorted((f"P{g}" for g in range(10)), key=lambda g: (_unit(0, g), g))
    assert {s[:2] for s in counted["test"]} == set(ranked[:2])


def test_fold_split_trains_on_the_other_folds():
    doc = _folds([f"s{i}" for i in range(9)], 3, test=0)
    run = fold_split(doc, 2, "split.json")
    assert run["val"] == doc["folds"][2] and run["fold"] == 2
    assert sorted(run["train"]) == sorted(doc["folds"][0] + doc["folds"][1])
    with pytest.raises(SegtoolError, match=r"--fold 3 is out of range: split.json has 3 folds"):
        fold_split(doc, 3, "split.json")
    with pytest.raises(SegtoolError, match="has no folds; run segtool split DATASET --folds K"):
        fold_split({"train": [], "val": [], "test": []}, 0, "split.json")


def test_split_dataset_writes_folds_and_a_resplit_keeps_them(tmp_path):
    make_dataset(tmp_path, [f"s{i:02d}" for i in range(10)])
    first = split_dataset(tmp_path, folds=3, jobs=1).split
    assert read_split(tmp_path / "split.json") == first
    assert first["fold_rule"] and first["test"] == [] and len(first["folds"]) == 3
    make_dataset(tmp_path, [f"s{i:02d}" for i in range(10, 14)])
    grown = split_dataset(tmp_path, folds=3, jobs=1, overwrite=True)
    assert any("kept the folds of the 10 images" in n for n in grown.notes)
    for i, stems in enumerate(first["folds"]):
        assert set(stems) <= set(grown.split["folds"][i])
    assert sorted(len(f) for f in grown.split["folds"]) == [4, 5, 5]


def test_read_split_refuses_damaged_folds(tmp_path):
    make_dataset(tmp_path, [f"s{i}" for i in range(6)])
    doc = split_dataset(tmp_path, folds=2, jobs=1).split
    path = tmp_path / "split.json"
    bad = {**doc, "folds": [doc["folds"][0], doc["folds"][1] + doc["folds"][0][:1]]}
    path.write_text(json.dumps(bad))
    with pytest.raises(SegtoolError, match="is in folds 0 and 1"):
        read_split(path)
    path.write_text(json.dumps({**doc, "folds": [doc["folds"][0]]}))
    with pytest.raises(SegtoolError, match="in a fold but not in train or val, or the other"):
        read_split(path)


def test_volume_folders_are_folded_by_case(tmp_path):
    from tests.volumes import make_msd

    root = make_msd(tmp_path / "mri", n=5, test=0)
    out = invoke(["split", str(root), "--folds", "2", "--group", r"BRATS_00(\d)", "-j", "1"])
    assert out.exit_code == 0, out.output
    doc = json.loads((root / "split.json").read_text())
    cases = [f"BRATS_{i:03d}" for i in range(5)]
    assert sorted(doc["folds"][0] + doc["folds"][1]) == cases  # case names, never slices
    assert sorted(len(f) for f in doc["folds"]) == [2, 3]
    assert "fold 1" in out.output and "cases" in out.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "9"], "--folds 9: the dataset has 6 images to share, too few for 9 folds"),
        (["--folds", "3", "--group", "^(x)"], "--group '^(x)' matches none of the names of the 6"),
        (["--folds", "3", "--group", "^(s[0-3])"], "matches 4 of the names of the 6 images"),
        (["--folds", "4", "--group", "^(s[0-5])$", "--test", "3"], "after --test holds out 3"),
        (["--folds", "3", "--group", "("], "--group '(' is not a regular expression"),
    ],
)
def test_bad_fold_requests_are_one_line(tmp_path, args, message):
    make_dataset(tmp_path, [f"s{i}" for i in range(6)])
    out = invoke(["split", str(tmp_path), "-j", "1", *args])
    assert out.exit_code == 1, out.output
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "split.json").exists()


def test_fold_options_that_do_not_go_together(tmp_path):
    make_dataset(tmp_path, [f"s{i}" for i in range(6)])
    for args, message in (
        (["--group", "(s)"], "--group names the groups of --folds"),
        (["--folds", "2", "--val", "0.2"], "drop --val"),
        (["--folds", "2", "--stratify"], "drop it with --folds"),
    ):
        out = invoke(["split", str(tmp_path), *args])
        assert out.exit_code != 0 and message in out.output, out.output
