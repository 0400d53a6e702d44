"""The dataset module: loading as displayed, crops, padding, splits, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.dataset import Pair, check_pairs
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.train.data import (
    SegmentationDataset,
    normalize,
    pad_collate,
    random_crop,
    resolve_split,
    to_model_input,
)

CMAP = make_class_map(["_background_", "cat", "dog"])


def pair(tmp_path, stem, image: Image.Image, mask: np.ndarray, **save) -> Pair:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    image_path = tmp_path / "images" / f"{stem}.png"
    image.save(image_path, **save)
    mask_path = tmp_path / "masks" / f"{stem}.png"
    write_mask(mask_path, mask.astype(np.uint8), CMAP)
    return Pair(stem, image_path, mask_path)


def test_item_is_a_dict_of_tensors(tmp_path):
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:10, 5:10] = 2
    p = pair(tmp_path, "a", Image.new("RGB", (30, 20), (255, 0, 0)), mask)
    item = SegmentationDataset([p], CMAP)[0]
    assert item["image"].shape == (3, 20, 30) and item["image"].dtype == torch.uint8
    assert item["mask"].dtype == torch.uint8 and int(item["mask"][6, 6]) == 2
    x = to_model_input(item["image"][None], torch.device("cpu"))  # ImageNet statistics
    assert x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert float(x[0, 1, 0, 0]) == pytest.approx((0 - 0.456) / 0.224, rel=1e-5)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (8, 6), 128),
        Image.new("RGBA", (8, 6), (128, 128, 128, 0)),
        Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16)),
    ],
)
def test_grey_rgba_16_bit_become_three_channels(tmp_path, image):
    p = pair(tmp_path, "g", image, np.zeros((6, 8)))
    item = SegmentationDataset([p], CMAP, normalization="image")[0]
    assert item["image"].shape == (3, 6, 8)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 12 x 6, shown 6 x 12
    img = Image.new("RGB", (12, 6))
    p = pair(tmp_path, "r", img, np.zeros((12, 6)), exif=exif.tobytes())
    assert SegmentationDataset([p], CMAP)[0]["image"].shape == (3, 12, 6)


def test_per_image_normalisation():
    rng = np.random.default_rng(0)
    x = normalize(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8), "image").numpy()
    np.testing.assert_allclose(x.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2)), 1, atol=1e-4)


def test_resize_keeps_mask_ids(tmp_path):
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[:, 30:] = 1
    mask[0, 0] = 255
    p = pair(tmp_path, "s", Image.new("RGB", (60, 40)), mask)
    item = SegmentationDataset([p], CMAP, size=32)[0]
    assert item["mask"].shape == (32, 32)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 255}  # nearest: no blended ids


def test_fg_crop_is_centred_on_foreground():
    rng = np.random.default_rng(1)
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    mask = np.zeros((200, 200), dtype=np.uint8)
    mask[150, 20] = 2  # one rare pixel
    for _ in range(20):
        _, crop = random_crop(image, mask, 32, rng, fg_fraction=1.0, ignore_index=255)
        assert (crop == 2).any()
    hits = sum((random_crop(image, mask, 32, rng, 0.0, 255)[1] == 2).any() for _ in range(50))
    assert hits < 10  # uniform crops rarely find it


def test_dataset_crops_when_asked(tmp_path):
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[30, 50] = 1
    p = pair(tmp_path, "c", Image.new("RGB", (60, 40)), mask)
    item = SegmentationDataset([p], CMAP, crop=16, fg_crop=1.0)[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert int(item["mask"].max()) == 1  # centred on the one foreground pixel


def test_crop_pads_small_images_with_ignore():
    image = np.ones((10, 12, 3), dtype=np.uint8)
    mask = np.ones((10, 12), dtype=np.uint8)
    img, crop = random_crop(image, mask, 16, np.random.default_rng(0), 0.0, 255)
    assert crop.shape == (16, 16) and (crop[10:] == 255).all() and (crop[:, 12:] == 255).all()
    assert (img[10:] == 0).all()


def test_pad_collate_pads_to_the_stride_with_ignore():
    batch = [
        {"image": torch.ones(3, 20, 30), "mask": torch.ones(20, 30, dtype=torch.long), "stem": "a"},
        {"image": torch.ones(3, 40, 10), "mask": torch.ones(40, 10, dtype=torch.long), "stem": "b"},
    ]
    out = pad_collate(batch, ignore_index=255)
    assert out["image"].shape == (2, 3, 64, 32) and out["mask"].shape == (2, 64, 32)
    assert int(out["mask"][0, 25, 5]) == 255 and float(out["image"][0, 0, 25, 5]) == 0
    assert int(out["mask"][1, 39, 9]) == 1 and out["stem"] == ["a", "b"]


def test_checks_name_both_files_and_bad_values(tmp_path):
    good = pair(tmp_path, "good", Image.new("RGB", (8, 6)), np.zeros((6, 8)))
    wrong_size = pair(tmp_path, "big", Image.new("RGB", (9, 6)), np.zeros((6, 8)))
    bad_value = pair(tmp_path, "val", Image.new("RGB", (8, 6)), np.full((6, 8), 7))
    with pytest.raises(SegtoolError) as info:
        check_pairs([good, wrong_size, bad_value], CMAP, jobs=1)
    message = str(info.value)
    assert "2 of 3 training pairs are invalid" in message
    assert "big.png is 9x6 but its mask" in message and "masks/big.png is 8x6" in message
    assert "val.png: value 7 is neither a class id (0..2)" in message


def test_resolve_split_uses_split_json_and_rejects_unknown_names(tmp_path):
    pairs = [Pair(s, tmp_path / f"{s}.png", tmp_path / f"{s}.png") for s in "abcd"]
    (tmp_path / "split.json").write_text(
        '{"seed": 0, "train": ["a", "b"], "val": ["c"], "test": ["d"]}'
    )
    assert resolve_split(tmp_path, pairs)["val"] == ["c"]
    (tmp_path / "split.json").write_text(
        '{"seed": 0, "train": ["a", "zz"], "val": ["c"], "test": []}'
    )
    with pytest.raises(SegtoolError, match="not in the dataset, e.g. 'zz'"):
        resolve_split(tmp_path, pairs)
    (tmp_path / "split.json").unlink()
    made = resolve_split(tmp_path, pairs * 1, val=0.5, test=0.0, seed=2)
    assert sorted(made["train"] + made["val"]) == list("abcd")


def test_threshold_tuning_reads_validation_images_as_validation_does(tmp_path):
    """--tune-thresholds' validation loader applies --resize keep (it once stretched)."""
    from types import SimpleNamespace

    from segtool.core.classes import read_classes_json
    from segtool.core.dataset import find_pairs
    from segtool.train.build import TrainingData
    from segtool.train.config import TrainConfig
    from segtool.train.thresholds import validation_loader
    from tests.synthetic import make_dataset

    root = make_dataset(tmp_path / "ds", n=6, size=40)
    pairs, _ = find_pairs(root)
    class_map = read_classes_json(root / "classes.json")
    data = TrainingData(pairs, [], {}, pairs[:4], pairs[4:])
    config = TrainConfig(size=(32, 64), resize="keep", batch_size=2)
    hardware = SimpleNamespace(device=torch.device("cpu"), workers=0)
    batch = next(
        iter(validation_loader(config, class_map, data, SimpleNamespace(hardware=hardware)))
    )
    kept = SegmentationDataset(pairs[4:], class_map, size=(32, 64), resize="keep")
    stretched = SegmentationDataset(pairs[4:], class_map, size=(32, 64))
    assert not torch.equal(kept[0]["mask"], stretched[0]["mask"])
    for i in range(2):
        assert torch.equal(batch["image"][i], kept[i]["image"])
        assert torch.equal(batch["mask"][i], kept[i]["mask"])
