"""The Dice family (per-image, squared-denominator, generalised, log-cosh) against a slow
reference written here in plain Python loops, against MONAI where its definitions match, and
the class weights of the cross-entropy family against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from segtool.core.classes import ClassMap
from segtool.core.errors import SegtoolError
from segtool.train.losses import (
    BINARY,
    EMPTY_POLICY,
    MULTICLASS,
    MULTILABEL,
    build_loss,
    check_class_weights,
)

IGN = 255


def probabilities(logits, mode):
    """Per pixel, per channel probabilities as nested lists [n][c][pixel]."""
    n, c = logits.shape[:2]
    flat = logits.reshape(n, c, -1)
    flat = torch.softmax(flat, 1) if mode == MULTICLASS else torch.sigmoid(flat)
    return flat.tolist()


def slow_terms(logits, target, mode, squared=False):
    """[(image, class) -> (Σpg, Σp or Σp², Σg)] over non-ignored pixels, in loops."""
    p = probabilities(logits, mode)
    t = target.reshape(target.shape[0], -1).tolist()
    n, c = len(p), len(p[0])
    sums = {}
    for i in range(n):
        for k in range(c):
            inter = size_p = size_g = 0.0
            for j, value in enumerate(t[i]):
                if value == IGN:
                    continue
                g = 1.0 if (value == 1 if mode == BINARY else value == k) else 0.0
                q = p[i][k][j]
                inter += q * g
                size_p += q * q if squared else q
                size_g += g
            sums[i, k] = (inter, size_p, size_g)
    return sums, n, c


def slow_dice(logits, target, mode, *, per_image=False, squared=False):
    """The empty policy: a class absent from the unit's reference adds 0, still counted."""
    sums, n, c = slow_terms(logits, target, mode, squared)
    units = [[i] for i in range(n)] if per_image else [list(range(n))]
    losses = []
    for unit in units:
        for k in range(c):
            inter = sum(sums[i, k][0] for i in unit)
            size = sum(sums[i, k][1] + sums[i, k][2] for i in unit)
            present = sum(sums[i, k][2] for i in unit) > 0
            losses.append(1 - 2 * inter / size if present else 0.0)
    return sum(losses) / len(losses)


def slow_generalized(logits, target, mode):
    sums, n, c = slow_terms(logits, target, mode)
    numerator = denominator = 0.0
    for k in range(c):
        inter = sum(sums[i, k][0] for i in range(n))
        size = sum(sums[i, k][1] + sums[i, k][2] for i in range(n))
        ref = sum(sums[i, k][2] for i in range(n))
        weight = 1 / ref**2 if ref else 0.0
        numerator += weight * inter
        denominator += weight * size
    return 1 - 2 * numerator / denominator if denominator else 0.0


def random_case(mode, seed, n=3, size=5, empty_image=False, absent_class=False):
    gen = torch.Generator().manual_seed(seed)
    c = 1 if mode == BINARY else 4
    logits = torch.randn(n, c, size, size, generator=gen) * 2
    high = 2 if mode == BINARY else (3 if absent_class else 4)
    target = torch.randint(0, high, (n, size, size), generator=gen)
    target[torch.rand(n, size, size, generator=gen) < 0.15] = IGN
    if empty_image:
        target[0][target[0] != IGN] = 0
    return logits, target


CASES = [
    pytest.param(dict(), id="plain"),
    pytest.param(dict(empty_image=True), id="an-empty-image"),
    pytest.param(dict(absent_class=True), id="a-class-absent-from-the-batch"),
]


@pytest.mark.parametrize("mode", [BINARY, MULTICLASS])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_variant_equals_the_slow_reference(mode, case, seed):
    logits, target = random_case(mode, seed, **case)
    table = {
        "dice": slow_dice(logits, target, mode),
        "dice-image": slow_dice(logits, target, mode, per_image=True),
        "dice-squared": slow_dice(logits, target, mode, squared=True),
        "generalized-dice": slow_generalized(logits, target, mode),
        "log-cosh-dice": math.log(math.cosh(slow_dice(logits, target, mode))),
    }
    for name, expected in table.items():
        got = float(build_loss(name, mode, IGN)(logits, target))
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7), name


def test_hand_table_binary_squared_and_per_image():
    # image 0: p = 0.9, 0.2 for g = 1, 0; image 1: p = 0.6, 0.4 for g = 0, 0 (empty)
    p = torch.tensor([[0.9, 0.2], [0.6, 0.4]])
    logits = torch.log(p / (1 - p)).reshape(2, 1, 1, 2)
    target = torch.tensor([[1, 0], [0, 0]]).reshape(2, 1, 2)
    batch = 1 - 2 * 0.9 / (0.9 + 0.2 + 0.6 + 0.4 + 1)  # the empty image's p still counts
    squared = 1 - 2 * 0.9 / (0.81 + 0.04 + 0.36 + 0.16 + 1)
    per_image = ((1 - 2 * 0.9 / (1.1 + 1)) + 0.0) / 2  # the empty image adds 0, counted
    for name, expected in [("dice", batch), ("dice-squared", squared), ("dice-image", per_image)]:
        assert float(build_loss(name, BINARY, IGN)(logits, target)) == pytest.approx(
            expected, rel=1e-5
        )


def test_generalized_dice_hand_table():
    # two pixels, three classes (class 2 absent: weight 0); targets 0 and 1
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]
    logits = torch.log(torch.tensor(probs)).T.reshape(1, 3, 1, 2)
    target = torch.tensor([0, 1]).reshape(1, 1, 2)
    # w0 = w1 = 1/1²; Σpg: 0.7, 0.8; Σ(p+g): 0.8 + 1, 1.0 + 1
    expected = 1 - 2 * (0.7 + 0.8) / (1.8 + 2.0)
    assert float(build_loss("generalized-dice", MULTICLASS, IGN)(logits, target)) == (
        pytest.approx(expected, rel=1e-5)
    )


@pytest.mark.parametrize(
    "name", ["dice-image", "dice-squared", "generalized-dice", "log-cosh-dice"]
)
def test_empty_foreground_is_zero_with_zero_gradient(name):
    """EMPTY_POLICY: no reference pixel of any class in the unit -> 0, no gradient."""
    assert EMPTY_POLICY == "absent-scores-zero"
    logits = torch.full((2, 1, 4, 4), 3.0, requires_grad=True)
    target = torch.zeros((2, 4, 4), dtype=torch.long)
    loss = build_loss(name, BINARY, IGN)(logits, target)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert float(logits.grad.abs().sum()) == 0.0


def monai_input(logits, target, k):
    """MONAI's form: probabilities (N, C, H, W) and one-hot references (N, C, H, W)."""
    return torch.softmax(logits, 1), torch.nn.functional.one_hot(target, k).permute(
        0, 3, 1, 2
    ).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monai_agrees_where_every_class_is_present(seed):
    """MONAI's DiceLoss (batch, squared_pred, per image) and GeneralizedDiceLoss (batch,
    w_type square), without smoothing, on batches in which every class is in every image
    (MONAI's empty-class rules differ from EMPTY_POLICY) and nothing is ignored."""
    from monai.losses import DiceLoss, GeneralizedDiceLoss

    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 6, generator=gen)
    target = torch.randint(0, 3, (2, 6, 6), generator=gen)
    target[:, 0, :3] = torch.tensor([0, 1, 2])  # every class in every image
    pred, ref = monai_input(logits, target, 3)
    smooth = dict(smooth_nr=0.0, smooth_dr=1e-12)
    oracle = {
        "dice": DiceLoss(batch=True, **smooth),
        "dice-squared": DiceLoss(batch=True, squared_pred=True, **smooth),
        "dice-image": DiceLoss(batch=False, **smooth),
        "generalized-dice": GeneralizedDiceLoss(batch=True, w_type="square", **smooth),
    }
    for name, monai_loss in oracle.items():
        expected = float(monai_loss(pred, ref))
        got = float(build_loss(name, MULTICLASS, IGN)(logits, target))
        assert got == pytest.approx(expected, rel=1e-4), name


def test_multilabel_variants_see_only_the_pixels_that_count():
    # bit values: 1 = class 1, 2 = class 2, 4 = the ignore bit; each channel its own plane
    logits = torch.tensor([[[[2.0, -1.0, 0.5]], [[-2.0, 1.0, 3.0]]]])
    target = torch.tensor([[[1, 2, 4]]])  # the third pixel is ignored
    p = torch.sigmoid(logits[0, :, 0, :2])  # (2 channels, 2 pixels that count)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    dice = [1 - 2 * (p[c] * g[c]).sum() / ((p[c] * p[c]).sum() + g[c].sum()) for c in (0, 1)]
    loss = build_loss("dice-squared", MULTILABEL, 4)(logits, target)
    assert float(loss) == pytest.approx(float(sum(dice) / 2), rel=1e-5)


def test_multilabel_per_image_dice_keeps_images_apart():
    logits = torch.tensor([[[[2.0, -1.0]], [[-2.0, 1.0]]], [[[0.5, 0.3]], [[1.0, -1.0]]]])
    target = torch.tensor([[[1, 2]], [[4, 0]]])  # image 1: one ignored pixel, one empty
    p = torch.sigmoid(logits)
    image0 = [1 - 2 * p[0, 0, 0, 0] / (p[0, 0, 0].sum() + 1), 1 - 2 * p[0, 1, 0, 1] / (
        p[0, 1, 0].sum() + 1)]  # fmt: skip
    expected = (sum(image0) + 0.0 + 0.0) / 4  # image 1 has no reference pixel: adds 0
    loss = build_loss("dice-image", MULTILABEL, 4)(logits, target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_class_weighted_cross_entropy_hand_table():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
    logits = torch.log(torch.tensor(probs)).T.reshape(1, 3, 1, 3)
    target = torch.tensor([0, 1, IGN]).reshape(1, 1, 3)
    w = (0.5, 2.0, 7.0)
    expected = -(0.5 * math.log(0.7) + 2.0 * math.log(0.8)) / (0.5 + 2.0)  # weighted mean
    got = build_loss("ce", MULTICLASS, IGN, class_weights=w)(logits, target)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    both = build_loss("bce-dice", MULTICLASS, IGN, class_weights=w)(logits, target)
    dice = build_loss("dice", MULTICLASS, IGN)(logits, target)
    assert float(both) == pytest.approx(expected + float(dice), rel=1e-5)


def test_class_weighted_binary_cross_entropy_hand_table():
    p = torch.tensor([0.9, 0.2, 0.7, 0.6])
    logits = torch.log(p / (1 - p)).reshape(1, 1, 1, 4)
    target = torch.tensor([1, 0, 0, IGN]).reshape(1, 1, 4)
    w = (1.0, 3.0)  # background 1, foreground 3
    expected = -(3 * math.log(0.9) + math.log(0.8) + math.log(0.3)) / (3 + 1 + 1)
    got = build_loss("ce", BINARY, IGN, class_weights=w)(logits, target)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_class_weights_are_refused_in_one_line():
    cmap = ClassMap(("_background_", "cat", "dog"))
    check_class_weights("ce", (1.0, 2.0, 3.0), cmap)
    check_class_weights("bce-dice", "auto", cmap)
    with pytest.raises(SegtoolError, match=r"1,2: 2 weights for 3 classes \(_background_, cat"):
        check_class_weights("ce", (1.0, 2.0), cmap)
    with pytest.raises(SegtoolError, match="--loss dice has none"):
        check_class_weights("dice", (1.0, 2.0, 3.0), cmap)
