"""--shard K/N for predict and evaluate, and evaluate --merge: shards merged = one run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask, write_mask
from segtool.core.shards import Shard, parse_shard
from segtool.evaluate.report import evaluate_dirs
from segtool.evaluate.shards import merge_shards
from segtool.predict.folder import predict_dir
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist
from segtool.train.model import build_model, save_model
from segtool.train.volume_data import cache_folder
from tests.cli import invoke
from tests.synthetic import make_dataset


def test_parse_shard_and_torchruns_default():
    assert parse_shard("2/4") == Shard(2, 4) and str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad in ("0/3", "4/3", "2", "a/b", "-1/2"):
        with pytest.raises(SegtoolError, match="must be K/N"):
            parse_shard(bad)
    assert parse_shard(None, {"RANK": "2", "WORLD_SIZE": "3"}) == Shard(3, 3)
    assert parse_shard(None, {"WORLD_SIZE": "1"}) is None and parse_shard(None, {}) is None


@pytest.mark.parametrize("n", range(0, 11))
def test_the_shards_cover_the_list_once_in_order(n):
    items = list(range(n))
    for count in range(1, 8):
        blocks = [Shard(k, count).take(items) for k in range(1, count + 1)]
        assert [x for b in blocks for x in b] == items
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert Shard(2, 3).take(list("abcdefg")) == ["c", "d"]  # 7 items: 2, 2, 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained model folder (deterministic on the CPU) and its classes."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(build_model("unet", "resnet18", None, 3, decoder_channels=(8,) * 5), root / "m")
    make_class_map(["_background_", "square", "disc"]).save(root / "classes.json")
    data = make_dataset(root / "ds", n=7, size=32)
    return root / "m", root / "classes.json", data


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".png"}


def test_sharded_predict_equals_one_run_byte_for_byte_and_resumes(model, tmp_path):
    weights, classes, data = model
    options = {"classes": classes, "device": "cpu", "workers": 0, "batch_size": 2}
    stems = sorted(p.stem for p in (data / "images").iterdir())
    predict_dir(weights, data / "images", tmp_path / "all", **options)
    parts = {}
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}"
        report = predict_dir(weights, data / "images", out, shard=Shard(k, 3), **options)
        assert report.n_images == len(_files(out)) and (out / "shard.json").is_file()
        # the k-th block of the names in order: what evaluate --shard k/3 pairs with them
        assert list(_files(out)) == [f"{s}.png" for s in Shard(k, 3).take(stems)]
        parts.update(_files(out))
    assert parts == _files(tmp_path / "all") and len(parts) == 7
    # Started again, a complete shard is kept as it is and nothing runs.
    before = (tmp_path / "part2" / "shard.json").stat().st_mtime_ns
    again = predict_dir(weights, data / "images", tmp_path / "part2", shard=Shard(2, 3), **options)
    assert again.n_images == 0 and "already complete" in again.notes[0]
    assert (tmp_path / "part2" / "shard.json").stat().st_mtime_ns == before
    # Another shard into that OUT is not a resumption: refused without --overwrite.
    with pytest.raises(SegtoolError, match="overwrite"):
        predict_dir(weights, data / "images", tmp_path / "part2", shard=Shard(1, 3), **options)


def _masks(root, n, seed=0):
    """Reference and predicted masks that differ, with ignore pixels in the references."""
    cmap = make_class_map(["_background_", "a", "b"])
    rng = np.random.default_rng(seed)
    for sub in ("ref", "pred"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        ref = np.zeros((24, 24), np.uint8)
        ref[rng.integers(0, 12) :, 3:15] = 1
        ref[5:9, rng.integers(10, 20) :] = 2
        pred = ref.copy()
        pred[rng.integers(0, 20) : 22, 2:7] = rng.integers(0, 3)
        pred[rng.integers(10, 24), : rng.integers(0, 6)] = 255  # predicted ignore: a miss
        ref[0, : rng.integers(1, 8)] = 255
        write_mask(root / "ref" / f"m{i:02d}.png", ref, cmap)
        write_mask(root / "pred" / f"m{i:02d}.png", pred, cmap)
    cmap.save(root / "ref" / "classes.json")


def test_sharded_evaluate_merged_equals_one_run_byte_for_byte(tmp_path):
    _masks(tmp_path, 9)
    options = {"classes": tmp_path / "ref/classes.json", "jobs": 1}
    evaluate_dirs(tmp_path / "pred", tmp_path / "ref", out=tmp_path / "all", **options)
    shards = []
    for k in (1, 2, 3, 4):
        out = tmp_path / f"e{k}"
        result = evaluate_dirs(
            tmp_path / "pred", tmp_path / "ref", out=out, shard=Shard(k, 4), **options
        )
        assert result.summary["n_images"] == len(Shard(k, 4).take(range(9)))
        shards.append(out)
    merge_shards(shards[::-1], tmp_path / "merged")  # given in any order
    for name in ("summary.json", "per_image.csv", "confusion.csv", "confusion.png"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert summary["prediction_ignored"] > 0  # every kind of count crosses the merge
    # the confusion matrix counted by hand from the masks: a sum over the shards' blocks
    expected = np.zeros((3, 4), np.int64)
    for path in sorted((tmp_path / "ref").glob("*.png")):
        ref, pred = read_mask(path), read_mask(tmp_path / "pred" / path.name)
        scored = ref != 255
        np.add.at(expected, (ref[scored], np.where(pred == 255, 3, pred)[scored]), 1)
    rows = (tmp_path / "merged" / "confusion.csv").read_text().splitlines()[1:]
    assert [[int(v) for v in row.split(",")[1:]] for row in rows] == expected.tolist()
    with pytest.raises(SegtoolError, match="shards 1/4 to 4/4 once each"):
        merge_shards(shards[:3], tmp_path / "partial")
    with pytest.raises(SegtoolError, match="once each"):
        merge_shards([*shards, shards[0]], tmp_path / "twice")
    with pytest.raises(SegtoolError, match="not a shard"):
        merge_shards([tmp_path / "all"], tmp_path / "none")


def test_masks_without_a_class_map_merge_as_one_run_whatever_labels_each_block_holds(tmp_path):
    """Without classes.json the classes are named up to the largest label the masks hold: the
    first shard's block holds labels 0-1, the second's 0-2. The merge names classes as one
    run over every block does (it once refused, saying the shards were evaluated with
    different options), and its confusion matrix is the one run's."""
    rng = np.random.default_rng(0)
    for sub in ("ref", "pred"):
        (tmp_path / sub).mkdir()
    for i in range(4):
        top = 1 if i < 2 else 2
        for sub in ("ref", "pred"):
            labels = rng.integers(0, top + 1, (16, 16)).astype(np.uint8)
            Image.fromarray(labels).save(tmp_path / sub / f"m{i}.png")
    evaluate_dirs(tmp_path / "pred", tmp_path / "ref", out=tmp_path / "all", jobs=1)
    shards = [tmp_path / "e1", tmp_path / "e2"]
    for k, out in enumerate(shards, 1):
        evaluate_dirs(tmp_path / "pred", tmp_path / "ref", out=out, shard=Shard(k, 2), jobs=1)
    assert json.loads((shards[0] / "summary.json").read_text())["n_images"] == 2
    merge_shards(shards, tmp_path / "merged")
    for name in ("summary.json", "per_image.csv", "confusion.csv", "confusion.png"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    header = (tmp_path / "merged" / "confusion.csv").read_text().splitlines()[0]
    assert header.split(",")[1:4] == ["background", "1", "2"]


def test_shards_scored_against_different_class_maps_are_refused(tmp_path):
    _masks(tmp_path, 4)
    ref = tmp_path / "ref"
    evaluate_dirs(tmp_path / "pred", ref, out=tmp_path / "e1", shard=Shard(1, 2), jobs=1)
    make_class_map(["_background_", "a", "b", "c"]).save(ref / "classes.json")
    evaluate_dirs(tmp_path / "pred", ref, out=tmp_path / "e2", shard=Shard(2, 2), jobs=1)
    with pytest.raises(SegtoolError, match="different classes or options"):
        merge_shards([tmp_path / "e1", tmp_path / "e2"], tmp_path / "merged")


def test_the_cli_shards_and_merges(tmp_path):
    _masks(tmp_path, 5, seed=1)
    for k in (1, 2):
        args = ["evaluate", tmp_path / "pred", tmp_path / "ref", "--out", tmp_path / f"e{k}"]
        assert invoke([*args, "--shard", f"{k}/2", "--jobs", "1"]).exit_code == 0
    merged = invoke(["evaluate", "--merge", tmp_path / "e1", tmp_path / "e2", "--out",
                     tmp_path / "m"])  # fmt: skip
    assert merged.exit_code == 0, merged.output
    assert "2 shards merged" in merged.output
    bad = invoke(["evaluate", tmp_path / "pred", tmp_path / "ref", "--shard", "3/2"])
    assert bad.exit_code == 1 and "must be K/N" in bad.output


def test_the_slice_cache_is_per_machine_and_keyed_by_the_data(tmp_path):
    """Across machines the run folder's name differs on each (host and process id), so the
    slice cache is not inside it: it is named by the cases and the axis."""
    from segtool.sources.volume_folder import VolumeCase

    cases = [VolumeCase("c1", (tmp_path / "c1.nii.gz",), tmp_path / "l1.nii.gz")]
    (tmp_path / "c1.nii.gz").write_bytes(b"x")
    (tmp_path / "l1.nii.gz").write_bytes(b"y")
    config = TrainConfig()
    one = cache_folder(config, tmp_path / "run-a", cases, Dist(0, 4, 0, 4))
    assert one == tmp_path / "run-a" / "cache"  # one machine: inside the run
    two_nodes = Dist(2, 4, 0, 2)
    a = cache_folder(config, tmp_path / ".run.segtool-new-hostA-11", cases, two_nodes)
    b = cache_folder(config, tmp_path / ".run.segtool-new-hostB-22", cases, two_nodes)
    assert a == b and tmp_path not in a.parents
    other_axis = TrainConfig(axis="coronal")
    assert cache_folder(other_axis, tmp_path / "r", cases, two_nodes) != a
    given = TrainConfig(cache=str(tmp_path / "mine"))
    assert cache_folder(given, tmp_path / "r", cases, two_nodes) == tmp_path / "mine"
