"""Multi-label losses: the 3x3 hand table (two overlapping classes), ignore in every channel."""

from __future__ import annotations

import math

import pytest
import torch

from segtool.core.constants import MULTILABEL
from segtool.core.errors import SegtoolError
from segtool.train.losses import LOSSES, build_loss

IGNORE_BIT = 128
# Class A is bit 0, B bit 1; (2, 0) is ignored, with both class bits set under it.
TARGET = [[1, 1, 0], [3, 3, 2], [128 | 3, 2, 2]]
IN = {0: 0.8, 1: 0.6}  # probability where the class is in the reference (A, B)
OUT = {0: 0.3, 1: 0.1}  # and where it is not


def case(ignored_p: float = 0.99):
    target = torch.tensor(TARGET).reshape(1, 3, 3)
    p = torch.empty(1, 2, 3, 3)
    for c in range(2):
        for y in range(3):
            for x in range(3):
                has = TARGET[y][x] >> c & 1
                p[0, c, y, x] = IN[c] if has else OUT[c]
    p[0, :, 2, 0] = ignored_p
    return torch.log(p / (1 - p)), target


# Per class over the 8 counted pixels: A has 4 reference pixels, B has 5.
SUMS = {
    0: {"pg": 4 * 0.8, "p": 4 * 0.8 + 4 * 0.3, "g": 4},
    1: {"pg": 5 * 0.6, "p": 5 * 0.6 + 3 * 0.1, "g": 5},
}


def mean(values):
    return sum(values) / len(values)


DICE = 1 - mean([2 * s["pg"] / (s["p"] + s["g"]) for s in SUMS.values()])
JACCARD = 1 - mean([s["pg"] / (s["p"] + s["g"] - s["pg"]) for s in SUMS.values()])
BCE = (4 * -math.log(0.8) + 4 * -math.log(0.7) + 5 * -math.log(0.6) + 3 * -math.log(0.9)) / 16
TVERSKY = 1 - mean(
    [
        s["pg"] / (s["pg"] + 0.3 * (s["p"] - s["pg"]) + 0.7 * (s["g"] - s["pg"]))
        for s in SUMS.values()
    ]
)
FOCAL = (
    sum(n * (1 - pt) ** 2 * -math.log(pt) for n, pt in ((4, 0.8), (4, 0.7), (5, 0.6), (3, 0.9)))
    / 16
)


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
def test_hand_table(name, expected):
    logits, target = case()
    loss = build_loss(name, MULTILABEL, IGNORE_BIT)(logits, target)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_lovasz_is_the_hinge_over_the_counted_pixels_of_every_channel():
    from segmentation_models_pytorch.losses import LovaszLoss

    logits, target = case()
    keep = torch.ones(3, 3, dtype=torch.bool)
    keep[2, 0] = False
    planes = torch.stack([(target[0] >> c) & 1 for c in range(2)])
    flat_logits = logits[0][:, keep].reshape(1, 1, -1)
    flat_target = planes[:, keep].reshape(1, 1, -1).float()
    expected = LovaszLoss("binary", from_logits=True)(flat_logits, flat_target)
    loss = build_loss("lovasz", MULTILABEL, IGNORE_BIT)(logits, target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_ignore_pixels_count_in_no_channel(name):
    loss_fn = build_loss(name, MULTILABEL, IGNORE_BIT)
    low, target = case(ignored_p=0.01)
    high, _ = case(ignored_p=0.99)
    assert float(loss_fn(low, target)) == pytest.approx(float(loss_fn(high, target)), rel=1e-6)
    high.requires_grad_(True)
    loss_fn(high, target).backward()
    assert torch.all(high.grad[0, :, 2, 0] == 0)
    assert torch.any(high.grad != 0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_prefers_the_right_answer_and_survives_an_all_ignored_batch(name):
    loss_fn = build_loss(name, MULTILABEL, IGNORE_BIT)
    logits, target = case()
    planes = torch.stack([(target >> c) & 1 for c in range(2)], dim=1).float()
    right = (planes * 2 - 1) * 6
    assert float(loss_fn(right, target)) < float(loss_fn(logits, target))
    all_ignored = torch.full((1, 3, 3), IGNORE_BIT)
    assert float(loss_fn(logits, all_ignored)) == 0.0


def test_every_loss_supports_multilabel_mode():
    assert all(MULTILABEL in spec.modes for spec in LOSSES.values())
    with pytest.raises(SegtoolError, match="--loss"):
        build_loss("nope", MULTILABEL, IGNORE_BIT)
