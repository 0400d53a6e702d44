"""predict batches images by size: a batch holds only images padded to the same size, so each
image's mask is the one it gets alone, whatever the batch size and its neighbours in the
folder (padding a batch to its largest image would change predictions near the border)."""

from __future__ import annotations

import pytest

from segtool.predict.engine import padded_size
from segtool.predict.folder import predict_dir
from segtool.predict.reading import size_batches
from tests.test_predict_labels import _masks, folder  # noqa: F401  (the fixture)


def test_size_batches_hand_table():
    # Full buckets go out at once; past the window the oldest bucket goes out as it is.
    assert size_batches("aabab", 2, 8) == [[0, 1], [2, 4], [3]]
    assert size_batches("abcab", 2, 2) == [[0], [1], [2], [3], [4]]
    assert size_batches("abcaa", 2, 3) == [[0, 3], [1], [2], [4]]
    assert size_batches("", 4, 16) == []
    # Every index once, each batch of one key, at most the batch size.
    keys = "abacbbcaacbbabca" * 3
    batches = size_batches(keys, 3, 7)
    assert sorted(i for b in batches for i in b) == list(range(len(keys)))
    assert all(len({keys[i] for i in b}) == 1 and len(b) <= 3 for b in batches)


def test_padded_size_is_whole_strides():
    assert padded_size((64, 64)) == (64, 64)
    assert padded_size((72, 40)) == (96, 64)
    assert padded_size((1, 33)) == (32, 64)


@pytest.mark.parametrize("model", ["multi", "binary"])
def test_a_mask_does_not_depend_on_the_batch(folder, tmp_path, model):  # noqa: F811
    options = {"device": "cpu", "workers": 0, "overlay_images": True}
    for batch in (1, 3, 8):
        predict_dir(folder / model, folder / "images", tmp_path / f"b{batch}", batch_size=batch,
                    **options)  # fmt: skip
    alone = _masks(tmp_path / "b1")
    assert len(alone) == 11
    assert _masks(tmp_path / "b3") == alone
    assert _masks(tmp_path / "b8") == alone


@pytest.mark.parametrize("model", ["multi", "binary"])
def test_the_gpus_channels_last_path_gives_the_same_masks(folder, model):  # noqa: F811
    """The engine's channels_last path (a GPU's) run on the CPU: the same masks as NCHW; on
    the CPU the engine keeps NCHW; no autograd state survives a prediction."""
    import torch

    from segtool.predict.engine import Engine
    from segtool.predict.predictor import load_predictor

    images = [
        torch.randint(
            0, 255, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h)
        )
        for h, w in ((64, 64), (72, 40))
    ]
    masks = []
    for channels_last in (False, True):
        predictor = load_predictor(folder / model / "model", folder / model / "classes.json")
        engine = Engine(predictor, torch.device("cpu"), tta=True)
        assert not engine.channels_last
        if channels_last:
            engine.channels_last = True
            engine.model = engine.model.to(memory_format=torch.channels_last)
        layouts = []
        engine.model.register_forward_pre_hook(
            lambda _, args, seen=layouts: seen.append(
                args[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
        probs = [p for img in images for p in engine.probabilities([img])]
        assert layouts == [channels_last] * 6  # 2 images x 3 TTA views
        assert all(p.is_inference() and not p.requires_grad for p in probs)
        masks.append([engine.labels(p) for p in probs])
    for nchw, last in zip(*masks, strict=True):
        assert (nchw == last).all()
