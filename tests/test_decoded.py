"""The decoded cache: every pair decoded once, read back pixel for pixel as from the files, its
foreground found without a scan, and the same weights whether a run decodes once or every
epoch, in RAM or on disk."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from segtool.core.classes import read_classes_json
from segtool.core.dataset import find_pairs
from segtool.core.errors import SegtoolError
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import TrainConfig
from segtool.train.data import SegmentationDataset, random_crop
from segtool.train.decoded import ForegroundIndex, choose_decoded, decode_pairs
from segtool.train.fingerprint import Machine
from segtool.train.loop import fit
from tests.synthetic import make_dataset, make_multilabel_dataset

GB = 2**30


def test_the_foreground_index_finds_each_pixel_where_nonzero_lists_it():
    rng = np.random.default_rng(1)
    mask = rng.choice(np.array([0, 1, 2, 7, 255], dtype=np.uint8), size=(23, 17))
    index = ForegroundIndex.of(mask, 255)
    assert index.values.tolist() == [1, 2, 7]  # background and ignore are not foreground
    for j, value in enumerate(index.values):
        ys, xs = np.nonzero(mask == value)  # the slow reference: a scan of the whole mask
        assert index.count(j) == len(ys)
        assert [index.locate(mask, j, k) for k in range(len(ys))] == list(zip(ys, xs, strict=True))
    empty = ForegroundIndex.of(np.zeros((4, 4), np.uint8), 255)
    assert empty.values.size == 0


@pytest.mark.parametrize("fg", [0.0, 0.5, 1.0])
def test_a_crop_from_the_index_is_the_crop_from_the_mask(fg):
    rng = np.random.default_rng(2)
    mask = np.zeros((40, 30), np.uint8)
    mask[5:9, 20:26], mask[30:33, 2:4], mask[0, 0] = 1, 2, 255
    image = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    index = ForegroundIndex.of(mask, 255)
    for seed in range(20):
        a = random_crop(image, mask, 16, np.random.default_rng(seed), fg, 255)
        b = random_crop(image, mask, 16, np.random.default_rng(seed), fg, 255, index)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # With every crop on foreground, each patch holds a foreground pixel near its centre.
    if fg == 1.0:
        _, patch = random_crop(image, mask, 16, np.random.default_rng(0), 1.0, 255, index)
        assert np.isin(patch, [1, 2]).any()


def _datasets(data, **options):
    pairs, _ = find_pairs(data)
    class_map = read_classes_json(data / "classes.json")
    return (
        pairs,
        class_map,
        lambda decoded=None: SegmentationDataset(pairs, class_map, decoded=decoded, **options),
    )


@pytest.mark.parametrize("where", ["ram", "disk"])
@pytest.mark.parametrize(
    "options", [{"crop": 32, "fg_crop": 0.7}, {"size": (40, 24), "resize": "keep"}]
)
def test_a_cached_sample_is_the_sample_read_from_the_files(tmp_path, where, options):
    data = make_dataset(tmp_path / "data", n=8, size=48)
    _, _, dataset = _datasets(data, **options)
    cache = decode_pairs(dataset(), where, tmp_path / "cache")
    plain, cached = dataset(), dataset(cache)
    for i in range(8):
        for seed in (3, 4):
            a, b = plain[(i, seed)], cached[(i, seed)]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert cache.where == where and cache.nbytes() > 0


def test_multilabel_masks_are_cached_as_read(tmp_path):
    data = make_multilabel_dataset(tmp_path / "data", n=6, size=32)
    _, _, dataset = _datasets(data, crop=24, fg_crop=1.0)
    cache = decode_pairs(dataset(), "disk", tmp_path / "cache")
    for i in range(6):
        a, b = dataset()[(i, 1)], dataset(cache)[(i, 1)]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["image"], b["image"])


def test_a_disk_entry_is_reused_and_a_changed_file_makes_a_new_one(tmp_path):
    data = make_dataset(tmp_path / "data", n=6, size=32)
    _, _, dataset = _datasets(data)
    first = decode_pairs(dataset(), "disk", tmp_path / "cache")
    meta = first.folder / "meta.json"
    written = meta.stat().st_mtime_ns
    again = decode_pairs(dataset(), "disk", tmp_path / "cache")
    assert again.folder == first.folder and meta.stat().st_mtime_ns == written
    assert json.loads(meta.read_text())["stems"] == [f"s{i:02d}" for i in range(6)]
    # A worker gets the entry's name, not a copy of its pixels.
    assert len(pickle.dumps(first)) < 2000
    assert np.array_equal(pickle.loads(pickle.dumps(first)).item("s03")[0], first.item("s03")[0])
    image = data / "images" / "s02.png"
    image.write_bytes(image.read_bytes())  # same bytes, a new modification time
    _, _, dataset = _datasets(data)
    assert decode_pairs(dataset(), "disk", tmp_path / "cache").folder != first.folder
    # Another geometry is another entry, and a dataset refuses a cache of another geometry.
    _, _, resized = _datasets(data, size=(16, 16))
    assert decode_pairs(resized(), "disk", tmp_path / "cache").folder != first.folder
    with pytest.raises(ValueError, match="decoded cache"):
        resized(first)


def test_a_bad_mask_is_refused_while_decoding(tmp_path):
    data = make_dataset(tmp_path / "data", n=4, size=32)
    from PIL import Image

    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(data / "masks" / "s01.png")
    _, _, dataset = _datasets(data)
    with pytest.raises(SegtoolError, match="s01.png"):
        decode_pairs(dataset(), "ram")


def test_the_plan_keeps_decoded_images_in_ram_when_they_fit_a_quarter_of_it():
    assert choose_decoded(1 * GB, 4 * GB)[0] == "ram"
    assert choose_decoded(1.01 * GB, 4 * GB)[0] == "disk"
    assert "memory-mapped" in choose_decoded(3 * GB, 4 * GB)[1]
    assert Machine("cpu", "x86_64", 8.0, 2).free_ram_gb == 8.0
    assert Machine("cuda", "H100", 80.0, 16).free_ram_gb == 0.0  # unknown RAM: a file
    assert Machine("cuda", "H100", 80.0, 16, 200.0).free_ram_gb == 200.0
    with pytest.raises(SegtoolError, match="--decoded 'tape'"):
        TrainConfig(decoded="tape").check()


def test_the_same_weights_decoded_once_in_ram_on_disk_or_every_epoch(tmp_path):
    """Crops centred on foreground (from the index, or from the mask) and augmentation: a run
    trains the same weights from the cache as from the files, with any worker count."""
    data = make_dataset(tmp_path / "data", n=10, size=40)
    options = {"encoder": "resnet18", "batch_size": 4, "augment": "light", "lr": 3e-3,
               "epochs": 2, "crop": 32, "fg_crop": 0.8,
               "decoder_channels": (16, 16, 16, 16, 16)}  # fmt: skip
    weights = []
    for decoded, workers in (("off", 0), ("ram", 2), ("disk", 1)):
        out = tmp_path / decoded
        fit(data, out, workers=workers, decoded=decoded, **options)
        weights.append(load_checkpoint(out / "checkpoints/last.pt")["model"])
        config = json.loads((out / "config.json").read_text())
        assert config["options"]["decoded"] == decoded
    assert any((tmp_path / "disk" / "cache").glob("decoded-*/meta.json"))
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
