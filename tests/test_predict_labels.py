"""predict's labels-only path: a multi-class model predicting whole images takes the argmax of
its logits on the device and brings each batch's labels to the host in one copy; its masks
are byte for byte those of the probabilities path (softmax, then argmax per image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.predict.engine import Engine
from segtool.predict.folder import predict_dir
from segtool.train.config import parse_channels
from segtool.train.model import build_model, save_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Images of three sizes, interleaved (a batch of 8 in the folder's order would mix them), and an untrained
    3-class and 2-class model."""
    root = tmp_path_factory.mktemp("labels")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(11):
        h, w = [(64, 64), (72, 40), (40, 100)][i % 3]
        small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        picture.save(root / "images" / f"im{i:02d}.png")
    for name, classes in (("multi", ["_background_", "a", "b"]), ("binary", ["_background_", "a"])):
        torch.manual_seed(0)
        channels = parse_channels("32,16,16,8,8")
        model = build_model("unet", "tu-resnet10t", None, len(classes), decoder_channels=channels)
        save_model(model, root / name / "model")
        make_class_map(classes).save(root / name / "classes.json")
    return root


def _masks(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_labels_from_logits_are_the_probabilities_masks_byte_for_byte(folder, monkeypatch):
    calls = []
    original = Engine.labels_only

    def counted(self, images):
        calls.append(original(self, images))
        return calls[-1]

    monkeypatch.setattr(Engine, "labels_only", counted)
    options = {"batch_size": 8, "device": "cpu", "workers": 0, "overlay_images": True}
    predict_dir(folder / "multi", folder / "images", folder / "fast", **options)
    assert len(calls) == 3 and all(c is not None for c in calls)  # 11 images, 3 sizes
    monkeypatch.setattr(Engine, "labels_only", lambda self, images: None)
    predict_dir(folder / "multi", folder / "images", folder / "probs", **options)
    fast, probs = _masks(folder / "fast"), _masks(folder / "probs")
    assert len(fast) == 11 and fast == probs
    for name in fast:
        assert Image.open(folder / "fast" / name).size == Image.open(folder / "images" / name).size
    overlays = sorted((folder / "fast" / "overlays").iterdir())
    assert [p.read_bytes() for p in overlays] == [
        p.read_bytes() for p in sorted((folder / "probs" / "overlays").iterdir())
    ]


@pytest.mark.parametrize(("model", "options"), [("binary", {}), ("multi", {"tta": True})])
def test_probabilities_stay_where_a_cut_or_tta_needs_them(folder, model, options):
    from segtool.predict.predictor import load_predictor

    predictor = load_predictor(folder / model / "model", folder / model / "classes.json")
    engine = Engine(predictor, torch.device("cpu"), **options)
    image = torch.zeros((3, 32, 32), dtype=torch.uint8)
    assert engine.labels_only([image]) is None
    plain = Engine(load_predictor(folder / "multi" / "model", folder / "multi" / "classes.json"),
                   torch.device("cpu"))  # fmt: skip
    assert plain.labels_only([image])[0].shape == (32, 32)


def test_batches_for_a_gpu_are_pinned(folder):
    """Pinned host memory lets each batch's copy to the GPU run without waiting; on the CPU
    there is nothing to pin."""
    from types import SimpleNamespace

    from segtool.predict.engine import padded_size
    from segtool.predict.reading import image_loader

    paths = sorted((folder / "images").iterdir())
    sizes = [(64, 64)] * len(paths)
    for device, pinned in (("cuda", True), ("cpu", False)):
        engine = SimpleNamespace(device=torch.device(device), one_at_a_time=False,
                                 batch_key=padded_size,
                                 p=SimpleNamespace(size=None, normalization="imagenet"))  # fmt: skip
        loader = image_loader(paths, sizes, engine, 4, workers=0)  # type: ignore[arg-type]
        assert loader.pin_memory is pinned and [len(b) for b in loader.batch_sampler] == [4, 4, 3]
