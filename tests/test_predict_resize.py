"""A model trained with --size predicts its images in batches, resized on the device: each
image's mask is the one the one-image-at-a-time path gives it (written out below as the
oracle, the resize, padding, crop and bilinear resize back of segtool before batching), for
images of several sizes and aspect ratios, stretched or with the aspect kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segtool.core.images import load_rgb
from segtool.core.masks import read_mask
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.predict.predictor import load_predictor
from segtool.train.data import normalize, to_model_input
from tests.test_predict_labels import folder  # noqa: F401  (the fixture's models)

#: (height, width) of the images: square, tall, wide, odd, and one that is the box itself.
SIZES = [(64, 64), (72, 40), (40, 100), (50, 50), (100, 40), (33, 65), (48, 64), (70, 71)]
BOX = (48, 64)
CPU = torch.device("cpu")


def alone(engine: Engine, image: torch.Tensor) -> torch.Tensor:
    """One image's probabilities as segtool computed them one image at a time: resized into
    the box (bilinear, pixel centres, rounded to 8 bits), padded to 32 at the bottom and
    right, a batch of one, the padding cropped, resized back (bilinear, pixel centres)."""
    height, width = image.shape[1:]
    if engine.p.resize == "stretch":
        box = BOX
    else:
        scale = min(BOX[0] / height, BOX[1] / width)
        box = (
            min(max(round(height * scale), 1), BOX[0]),
            min(max(round(width * scale), 1), BOX[1]),
        )
    x = F.interpolate(image[None].float(), size=box, mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    padded = (-(-box[0] // 32) * 32, -(-box[1] // 32) * 32)
    x = F.pad(x, (0, padded[1] - box[1], 0, padded[0] - box[0]))
    with torch.inference_mode():
        probs = engine._forward(to_model_input(x, CPU))[:, :, : box[0], : box[1]]
        return F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("resize")
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate(SIZES * 2):
        small = rng.integers(0, 255, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(root / f"im{i:02d}.png")
    return root


@pytest.mark.parametrize("resize", ["stretch", "keep"])
@pytest.mark.parametrize("model", ["multi", "binary"])
def test_a_batch_resized_on_the_device_gives_each_image_its_own_mask(
    folder,  # noqa: F811
    images,
    tmp_path,
    model,
    resize,
):
    loaded = load_predictor(folder / model / "model", folder / model / "classes.json")
    predictor = dataclasses.replace(loaded, size=BOX, resize=resize)
    batches: list[int] = []
    predictor.model.register_forward_pre_hook(lambda _, args: batches.append(len(args[0])))
    predict_dir(predictor, images, tmp_path / "out", device="cpu", workers=0, batch_size=8,
                probabilities=model == "binary")  # fmt: skip
    # Batched: fewer forward passes than images (stretched: every image the box's size).
    assert sum(batches) == len(SIZES) * 2 and max(batches) > 1
    if resize == "stretch":
        assert batches == [8, 8]
    oracle = Engine(predictor, CPU)
    for path in sorted(images.glob("*.png")):
        image = normalize(load_rgb(path), "imagenet")
        probs = alone(oracle, image)
        expected = oracle.labels(probs)
        got = read_mask(tmp_path / "out" / f"{path.stem}.png")
        assert got.shape == expected.shape == image.shape[1:]
        np.testing.assert_array_equal(got, expected)
        if model == "binary":  # the probabilities too, to float16 and the CPU's batch rounding
            stored = np.load(tmp_path / "out" / f"{path.stem}.npz")["probs"].astype(np.float32)
            np.testing.assert_allclose(stored, probs.numpy(), atol=2e-3)


def test_mixed_sizes_in_one_call_go_through_the_model_apart(folder):  # noqa: F811
    """`probabilities` groups what it is given by the model input's padded size, whoever
    calls it: each image gets the probabilities it gets alone."""
    loaded = load_predictor(folder / "multi" / "model", folder / "multi" / "classes.json")
    engine = Engine(dataclasses.replace(loaded, size=BOX, resize="keep"), CPU)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=generator)
              for h, w in SIZES]  # fmt: skip
    keys = {engine.batch_key((h, w)) for h, w in SIZES}
    assert len(keys) > 1
    for image, probs, labels in zip(
        inputs, engine.probabilities(inputs), engine.labels_only(inputs), strict=True
    ):
        expected = alone(engine, image)
        torch.testing.assert_close(probs, expected, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(labels, engine.labels(expected))
