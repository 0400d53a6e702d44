"""Input geometry: --size H,W, --resize keep (aspect kept, padded with the ignore value), and
predict undoing exactly what training did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask, write_mask
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import Predictor
from segtool.train.config import TrainConfig
from segtool.train.data import SegmentationDataset, normalize, pad_collate, to_model_input
from segtool.train.geometry import parse_size, scaled_shape
from segtool.train.loop import fit
from tests.test_data import pair

CMAP = make_class_map(["_background_", "thing"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), (64, (64, 64)), ("64", (64, 64)), ("96,160", (96, 160)), ([32, 48], (32, 48))],
)
def test_size_forms(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "a,b", "1,2,3", "4,64"])
def test_bad_sizes_name_the_value(text):
    with pytest.raises(SegtoolError, match="--size"):
        parse_size(text)


def test_keep_scales_the_long_side_and_keeps_the_aspect():
    # 1080 x 1920 into 160 x 256: scale min(160/1080, 256/1920) = 0.1333 -> 144 x 256.
    assert scaled_shape(1080, 1920, (160, 256), "keep") == (144, 256)
    assert scaled_shape(1080, 1920, (160, 256), "stretch") == (160, 256)
    assert scaled_shape(100, 40, (64, 64), "keep") == (64, 26)  # tall: 0.64 * 40 = 25.6


def test_keep_pads_the_mask_with_the_ignore_value(tmp_path):
    mask = np.zeros((40, 100), dtype=np.uint8)
    mask[:, 50:] = 1
    image = Image.fromarray(np.full((40, 100, 3), 200, np.uint8))
    item = SegmentationDataset(
        [pair(tmp_path, "w", image, mask)], CMAP, size="32,64", resize="keep"
    )[0]
    assert tuple(item["mask"].shape) == (26, 64)  # 0.64 * 40 = 25.6 -> 26: not squashed to 32
    batch = pad_collate([item], ignore_index=255)
    assert tuple(batch["mask"].shape) == (1, 32, 64)
    assert (batch["mask"][0, 26:] == 255).all() and (batch["image"][0, :, 26:] == 0).all()
    assert set(batch["mask"][0, :26].unique().tolist()) == {0, 1}


class RedIsThing(nn.Module):
    """A model that calls a pixel `thing` where the image is red: predictions must land where
    the red rectangle is, whatever resizing happened on the way (two classes: one sigmoid
    channel, the normalised red)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class Spy(nn.Module):
    """Keeps the input it is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x[:, :1]


@pytest.mark.parametrize("resize", ["keep", "stretch"])
def test_predict_feeds_the_model_what_training_fed_it(tmp_path, resize):
    yy, xx = np.mgrid[0:40, 0:100]
    image = np.stack([xx * 2.5, yy * 6, (xx + yy) * 1.8], axis=-1).astype(np.uint8)  # smooth
    p = pair(tmp_path, "w", Image.fromarray(image), np.zeros((40, 100)))
    item = SegmentationDataset([p], CMAP, size="32,64", resize=resize)[0]
    trained = to_model_input(pad_collate([item], ignore_index=255)["image"], torch.device("cpu"))
    spy = Spy()
    engine = Engine(Predictor(spy, CMAP, size=(32, 64), resize=resize), torch.device("cpu"))
    engine.probabilities([normalize(image, "imagenet")])
    assert spy.seen.shape == trained.shape
    # The same pixels up to OpenCV's and torch's bilinear rounding (1/0.225/255 per level).
    assert (spy.seen - trained).abs().max() < 0.1


def _rectangle_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((height, width), np.uint8)
    truth[11:29, 47:90] = 1
    image = np.zeros((height, width, 3), np.uint8)
    image[truth == 1] = (255, 0, 0)
    return image, truth


def _near_boundary(truth: np.ndarray) -> np.ndarray:
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    return cv2.dilate(truth, kernel) != cv2.erode(truth, kernel)


@pytest.mark.parametrize("resize", ["keep", "stretch"])
def test_predict_undoes_the_training_geometry(resize):
    image, truth = _rectangle_image(40, 100)
    predictor = Predictor(RedIsThing(), CMAP, size=(32, 64), resize=resize)
    engine = Engine(predictor, torch.device("cpu"))
    labels = engine.labels(engine.probabilities([normalize(image, "imagenet")])[0])
    assert labels.shape == truth.shape
    wrong = labels != truth
    assert not (wrong & ~_near_boundary(truth)).any()  # only edge pixels may differ
    assert wrong.sum() < 0.1 * truth.sum()


def test_a_wide_image_trained_on_itself_is_predicted_in_place(tmp_path):
    image, truth = _rectangle_image(40, 100)
    image[..., 1] = 90  # the model must learn: red alone is not the only signal
    dataset = tmp_path / "ds"
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    for stem in ("a", "b", "c"):
        Image.fromarray(image).save(dataset / "images" / f"{stem}.png")
        write_mask(dataset / "masks" / f"{stem}.png", truth, CMAP)
    CMAP.save(dataset / "classes.json")
    split = {"seed": 0, "train": ["a", "b"], "val": ["c"], "test": []}
    (dataset / "split.json").write_text(json.dumps(split))
    run = tmp_path / "run"
    options = {"encoder": "resnet18", "workers": 0, "batch_size": 2, "augment": "none"}
    fit(dataset, run, TrainConfig(epochs=25, lr=3e-3, size="32,64", resize="keep", **options))
    config = json.loads((run / "config.json").read_text())["options"]
    assert (config["size"], config["resize"]) == ([32, 64], "keep")  # (H, W), parsed once
    predict_dir(run, dataset / "images", tmp_path / "pred", device="cpu")
    labels = read_mask(tmp_path / "pred" / "a.png")
    assert labels.shape == truth.shape
    wrong = labels != truth
    assert wrong.sum() < 0.1 * truth.sum(), wrong.sum()
    ys, xs = np.nonzero(labels == 1)
    ty, tx = np.nonzero(truth == 1)
    assert abs(ys.mean() - ty.mean()) < 1 and abs(xs.mean() - tx.mean()) < 1  # not shifted
