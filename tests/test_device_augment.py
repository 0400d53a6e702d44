"""Augmentation of whole batches on the device, run here on the CPU: exact flips, exact
identity, masks that keep their values (plus the ignore value where pixels moved in), the same
output from the same (seed, epoch, sample), and validation left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segtool.core.errors import SegtoolError
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import Given
from segtool.train.data import device_seed, pad_collate
from segtool.train.device_augment import (
    ANGLE,
    HFLIP,
    N_PARAMS,
    NOISE,
    SCALE,
    SHIFT_X,
    SHIFT_Y,
    TONE,
    VFLIP,
    WARP,
    DeviceAugment,
    augmentations,
)
from segtool.train.fingerprint import Machine
from segtool.train.loop import fit
from segtool.train.plan import plan_training
from tests.synthetic import make_dataset
from tests.test_plan import fingerprint

IGNORE = 255


def identity(n: int) -> torch.Tensor:
    params = torch.zeros((n, N_PARAMS))
    params[:, SCALE] = 1.0
    params[:, 8] = 1.0  # contrast
    return params


def hand_made(n: int = 2, height: int = 6, width: int = 8):
    """Images whose every pixel differs, masks of classes 0..2 with an ignore corner."""
    images = torch.arange(n * 3 * height * width, dtype=torch.float32).view(n, 3, height, width)
    masks = (torch.arange(n * height * width).view(n, height, width) % 3).long()
    masks[:, 0, 0] = IGNORE
    return images / 100, masks


def test_identity_parameters_return_the_batch_exactly():
    images, masks = hand_made()
    out, out_masks = DeviceAugment("strong", IGNORE)(images, masks, identity(2))
    assert torch.equal(out, images) and torch.equal(out_masks, masks)


@pytest.mark.parametrize(("column", "axis"), [(HFLIP, -1), (VFLIP, -2)])
def test_a_flip_is_numpys_flip_for_the_samples_drawn_for_it(column, axis):
    images, masks = hand_made()
    params = identity(2)
    params[1, column] = 1.0  # the second sample only
    out, out_masks = DeviceAugment("strong", IGNORE)(images, masks, params)
    assert np.array_equal(out[1].numpy(), np.flip(images[1].numpy(), axis))
    assert np.array_equal(out_masks[1].numpy(), np.flip(masks[1].numpy(), axis))
    assert torch.equal(out[0], images[0]) and torch.equal(out_masks[0], masks[0])


def test_a_shift_moves_pixels_whole_and_fills_the_mask_with_the_ignore_value():
    images, masks = hand_made(1, 6, 8)
    params = identity(1)
    params[0, WARP], params[0, SHIFT_X], params[0, SHIFT_Y] = 1.0, 2 / 8, 1 / 6  # 2 right, 1 down
    out, out_masks = DeviceAugment("light", IGNORE)(images, masks, params)
    assert torch.equal(out_masks[0, 1:, 2:], masks[0, :-1, :-2])
    assert (out_masks[0, 0, :] == IGNORE).all() and (out_masks[0, :, :2] == IGNORE).all()
    assert torch.allclose(out[0, :, 1:, 2:], images[0, :, :-1, :-2], atol=1e-5)
    # The image's fill: 0, the mean colour once normalised (bilinear weights of 0 up to float).
    assert out[0, :, 0, :].abs().max() < 1e-5 and out[0, :, :, :2].abs().max() < 1e-5


def test_a_quarter_turn_of_a_square_is_numpys_rotation():
    images, masks = hand_made(1, 8, 8)
    params = identity(1)
    params[0, WARP], params[0, ANGLE] = 1.0, 90.0
    out, out_masks = DeviceAugment("strong", IGNORE)(images, masks, params)
    turned = [np.rot90(masks[0].numpy(), k) for k in (1, -1)]
    assert any(np.array_equal(out_masks[0].numpy(), t) for t in turned)
    k = 1 if np.array_equal(out_masks[0].numpy(), turned[0]) else -1
    expected = np.rot90(images[0].numpy(), k, axes=(1, 2))
    assert np.allclose(out[0].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_masks_keep_their_values_and_the_same_seed_gives_the_same_batch(preset):
    augment = DeviceAugment(preset, IGNORE)
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.choice([0, 1, 2, IGNORE], (16, 24, 20))).long()
    images = torch.from_numpy(rng.normal(size=(16, 3, 24, 20))).float()
    params = torch.stack([augment.draw(device_seed(7, i)) for i in range(16)])
    assert params[:, WARP].any() and params[:, HFLIP].any() and params[:, TONE].any()
    if preset == "strong":
        assert params[:, NOISE].any() and params[:, VFLIP].any()
    out, out_masks = augment(images, masks, params)
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, IGNORE}
    assert not torch.equal(out, images)
    again = torch.stack([augment.draw(device_seed(7, i)) for i in range(16)])
    assert torch.equal(params, again)
    out2, masks2 = augment(images, masks, again)
    assert torch.equal(out, out2) and torch.equal(out_masks, masks2)
    other = torch.stack([augment.draw(device_seed(8, i)) for i in range(16)])
    assert not torch.equal(params, other)  # another epoch, other draws


def test_volume_slices_get_the_geometric_part_only():
    augment = DeviceAugment("strong", IGNORE, intensity=False)
    params = torch.stack([augment.draw(s) for s in range(50)])
    assert params[:, WARP].any() and not params[:, TONE].any() and not params[:, NOISE].any()


def test_the_place_is_checked_and_none_means_no_augmentation():
    assert augmentations("none", "device", IGNORE, 0) == (None, None)
    cpu, device = augmentations("light", "cpu", IGNORE, 0)
    assert cpu is not None and device is None
    cpu, device = augmentations("light", "device", IGNORE, 0)
    assert cpu is None and isinstance(device, DeviceAugment)
    with pytest.raises(SegtoolError, match="--augment-on 'gpu'"):
        augmentations("light", "gpu", IGNORE, 0)


def test_the_plan_augments_the_light_preset_on_a_gpu_and_keeps_the_cpu_on_albumentations():
    many = fingerprint(1000, 256, 256)
    h100 = Machine("cuda", "H100", 80.0, 16, 200.0)
    cpu = Machine("cpu", "x86_64", 8.0, 2)
    chosen = {c.option: c for c in plan_training(many, h100, Given.parse()).choices}
    assert chosen["augment"].value == "light" and chosen["augment_on"].value == "device"
    chosen = {c.option: c for c in plan_training(many, cpu, Given.parse()).choices}
    assert chosen["augment_on"].value == "cpu"
    strong = Given.parse(augment="strong")
    chosen = {c.option: c for c in plan_training(many, h100, strong).choices}
    assert chosen["augment_on"].value == "cpu" and "elastic" in chosen["augment_on"].why
    given = Given.parse(augment_on="device")
    chosen = {c.option: c for c in plan_training(many, cpu, given).choices}
    assert chosen["augment_on"].value == "device" and chosen["augment_on"].why == "given"


def test_only_training_samples_carry_parameters(tmp_path):
    """Validation never augments: its dataset draws no parameters, so its batches have none
    for the training step to apply."""
    from segtool.core.classes import read_classes_json
    from segtool.train.build import _datasets, load_data
    from segtool.train.config import TrainConfig
    from segtool.train.distributed import Dist

    data = make_dataset(tmp_path / "data", n=8, size=32)
    class_map = read_classes_json(data / "classes.json")
    config = TrainConfig(augment_on="device", batch_size=2, decoded="ram")
    loaded = load_data(data, tmp_path / "run", config, class_map, resume=False)
    train_ds, val_ds = _datasets(config, class_map, loaded, Dist())
    assert "augment" in train_ds[0] and "augment" not in val_ds[0]
    batch = pad_collate([train_ds[(i, 3)] for i in range(2)], IGNORE)
    assert batch["augment"].shape == (2, N_PARAMS)
    assert torch.equal(batch["augment"][1], train_ds.on_device.draw(device_seed(3, 1)))


def test_the_same_weights_with_1_and_2_workers_augmenting_on_the_device(tmp_path):
    data = make_dataset(tmp_path / "data", n=10, size=40)
    options = {"encoder": "resnet18", "batch_size": 4, "augment": "strong", "lr": 3e-3,
               "epochs": 2, "crop": 32, "augment_on": "device",
               "decoder_channels": (16, 16, 16, 16, 16)}  # fmt: skip
    weights = []
    for workers, decoded in ((1, "off"), (2, "ram")):
        out = tmp_path / f"w{workers}"
        fit(data, out, workers=workers, decoded=decoded, **options)
        weights.append(load_checkpoint(out / "checkpoints/last.pt")["model"])
        assert json.loads((out / "config.json").read_text())["options"]["augment_on"] == "device"
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
