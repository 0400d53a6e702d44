"""Losses: hand tables against docs/train.md's formulas, ignore pixels, empty and perfect batches."""

from __future__ import annotations

import math

import pytest
import torch

from segtool.cli import train as train_cli
from segtool.core.errors import SegtoolError
from segtool.train.losses import BINARY, LOSSES, MULTICLASS, build_loss

IGN = 255


def binary_case(extra_ignored: bool = False):
    """Probabilities p = 0.9, 0.2, 0.7, 0.1 for targets 1, 0, 1, 0 (plus an ignored pixel)."""
    p = torch.tensor([0.9, 0.2, 0.7, 0.1] + ([0.6] if extra_ignored else []))
    g = torch.tensor([1, 0, 1, 0] + ([IGN] if extra_ignored else []))
    logits = torch.log(p / (1 - p)).reshape(1, 1, 1, -1)
    return logits, g.reshape(1, 1, -1)


# Σpg = 1.6, Σp = 1.9, Σg = 2
DICE = 1 - 2 * 1.6 / (1.9 + 2)
JACCARD = 1 - 1.6 / (1.9 + 2 - 1.6)
BCE = -(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.9)) / 4
TVERSKY = 1 - 1.6 / (1.6 + 0.3 * 0.3 + 0.7 * 0.4)  # FP = Σp(1-g) = 0.3, FN = Σ(1-p)g = 0.4
FOCAL = sum((1 - pt) ** 2 * -math.log(pt) for pt in (0.9, 0.8, 0.7, 0.9)) / 4


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice", DICE),
        ("jaccard", JACCARD),
        ("ce", BCE),
        ("bce-dice", BCE + DICE),
        ("tversky", TVERSKY),
        ("focal", FOCAL),
    ],
)
@pytest.mark.parametrize("ignored", [False, True])
def test_binary_hand_table(name, expected, ignored):
    logits, target = binary_case(ignored)
    loss = build_loss(name, BINARY, IGN)(logits, target)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_bce_dice_weights():
    logits, target = binary_case()
    loss = build_loss("bce-dice", BINARY, IGN, bce_weight=0.5, dice_weight=2.0)(logits, target)
    assert float(loss) == pytest.approx(0.5 * BCE + 2 * DICE, rel=1e-5)


def multiclass_case(extra_ignored: bool = False):
    """Two pixels (targets 0 and 1) over three classes; class 2 absent from the target."""
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]] + ([[0.3, 0.3, 0.4]] if extra_ignored else [])
    targets = [0, 1] + ([IGN] if extra_ignored else [])
    logits = torch.log(torch.tensor(probs)).T.reshape(1, 3, 1, -1)
    return logits, torch.tensor(targets).reshape(1, 1, -1)


@pytest.mark.parametrize("ignored", [False, True])
def test_multiclass_dice_hand_table_absent_class_counts_zero(ignored):
    logits, target = multiclass_case(ignored)
    # class 0: 1 - 2·0.7/(0.8 + 1); class 1: 1 - 2·0.8/(1.0 + 1); class 2 is absent from the
    # target: segmentation-models-pytorch sets its term to 0 but keeps it in the mean over K.
    expected = ((1 - 1.4 / 1.8) + (1 - 1.6 / 2.0) + 0.0) / 3
    loss = build_loss("dice", MULTICLASS, IGN)(logits, target)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_multiclass_cross_entropy_ignores():
    logits, target = multiclass_case(extra_ignored=True)
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert float(build_loss("ce", MULTICLASS, IGN)(logits, target)) == pytest.approx(
        expected, rel=1e-5
    )


def test_all_background_batch():
    """Binary Dice on an all-background batch is 0 whatever the prediction (the class is
    absent, so its term is dropped); BCE still penalises false positives, hence bce-dice."""
    logits = torch.full((2, 1, 4, 4), 3.0)  # confident foreground everywhere: all wrong
    target = torch.zeros((2, 4, 4), dtype=torch.long)
    assert float(build_loss("dice", BINARY, IGN)(logits, target)) == 0.0
    assert float(build_loss("jaccard", BINARY, IGN)(logits, target)) == 0.0
    assert float(build_loss("bce-dice", BINARY, IGN)(logits, target)) == pytest.approx(
        -math.log(1 - torch.sigmoid(torch.tensor(3.0)).item()), rel=1e-5
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_prediction_is_near_zero_and_wrong_is_worse(name):
    target = torch.tensor([[[0, 1, 1, 0], [0, 1, 0, IGN]]])
    good = torch.where(target == 1, 20.0, -20.0).float().unsqueeze(1)
    assert float(build_loss(name, BINARY, IGN)(good, target)) < 1e-3
    assert float(build_loss(name, BINARY, IGN)(-good, target)) > 0.1
    onehot = torch.stack([target == 0, target == 1, torch.zeros_like(target, dtype=torch.bool)], 1)
    good_mc = torch.where(onehot, 20.0, -20.0)
    assert float(build_loss(name, MULTICLASS, IGN)(good_mc, target)) < 1e-3
    assert float(build_loss(name, MULTICLASS, IGN)(-good_mc, target)) > 0.1


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_ignores_ignore_pixels(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    target[:, :2] = IGN
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 6) * 10  # only ignored pixels change
    loss = build_loss(name, MULTICLASS, IGN)
    assert float(loss(logits, target)) == pytest.approx(float(loss(changed, target)), rel=1e-5)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(
        SegtoolError, match="--loss 'dicey' is not one of dice, dice-image, dice-squared"
    ):
        build_loss("dicey", BINARY, IGN)


def test_cli_choices_come_from_the_tables():
    from segtool.train.data import NORMALIZATIONS
    from segtool.train.transforms import PRESETS

    assert list(train_cli.LOSSES) == list(LOSSES)
    assert list(train_cli.AUGMENTS) == list(PRESETS)
    assert list(train_cli.NORMALIZE) == list(NORMALIZATIONS)
    from segtool.core.volumes import AXES

    assert list(train_cli.AXES) == list(AXES)
    from segtool.train.device_augment import AUGMENT_ON

    assert list(train_cli.AUGMENT_ON) == list(AUGMENT_ON)


def test_focal_gamma_reaches_the_loss_and_defaults_to_the_config():
    from segtool.train.config import TrainConfig

    assert build_loss("focal", MULTICLASS, IGN, focal_gamma=3.0).focal_loss_fn.keywords[
        "gamma"
    ] == pytest.approx(3.0)
    default = build_loss("focal", BINARY, IGN).focal_loss_fn.keywords["gamma"]
    assert default == TrainConfig().focal_gamma


@pytest.mark.parametrize("name", ["lr", "bce_weight", "tversky_beta", "warmup_epochs", "clip_grad"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_fit_refuses_amounts_that_are_not_finite_and_non_negative(name, value):
    # The command line refuses them as usage errors; fit() called from Python gets the same
    # rule from the config, before any training starts.
    from segtool.train.config import AMOUNTS, TrainConfig

    assert name in AMOUNTS
    with pytest.raises(
        SegtoolError, match=f"--{name.replace('_', '-')} .*finite number, 0 or more"
    ):
        TrainConfig(**{name: value}).check()
    TrainConfig(**{name: 0.0}).check()  # zero is an amount
