"""Imbalance: median-frequency class weights and rare classes against hand tables, the
oversampling draws (deterministic, rare-class images drawn more often), and the plan's lines."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask
from segtool.train.build import Hardware, build_loaders, load_data
from segtool.train.config import TrainConfig
from segtool.train.distributed import Dist
from segtool.train.imbalance import draw_probabilities, median_frequency, rare_classes
from segtool.train.loop import fit, preview_plan
from segtool.train.sampling import OversampleSampler

# images x classes: background, c1, c2 (c3 never seen)
COUNTS = np.array([[90, 10, 0, 0], [80, 0, 20, 0], [100, 0, 0, 0]])


def test_median_frequency_hand_table():
    # frequency = pixels / pixels of the images holding the class:
    # bg 270/300 = 0.9, c1 10/100 = 0.1, c2 20/100 = 0.2; median 0.2; c3 unseen -> 1
    assert median_frequency(COUNTS) == pytest.approx([0.2 / 0.9, 2.0, 1.0, 1.0])


def test_rare_classes_hand_table():
    # c1: 10/300 = 3.3 % of pixels in 1 of 3 images (33 %): not rare; c2 likewise; c3 unseen
    assert rare_classes(COUNTS) == []
    counts = np.array([[1000, 5]] + [[1000, 0]] * 9)  # 0.05 % of pixels, 1 of 10 images
    assert rare_classes(counts) == [1]
    common = np.array([[500, 500]] * 3 + [[1000, 0]] * 27)  # 5 % of pixels, 10 % of images
    assert rare_classes(common) == []
    few = np.array([[500, 500]] * 2 + [[1000, 0]] * 28)  # 3.3 % of pixels, in 6.7 % of images
    assert rare_classes(few) == [1]


def test_draw_probabilities_hand_table():
    counts = np.array([[100, 3]] * 2 + [[100, 0]] * 8)
    chances = draw_probabilities(counts, [1], 0.33)
    assert chances[:2] == pytest.approx([0.165, 0.165])
    assert chances[2:] == pytest.approx([0.67 / 8] * 8)
    assert draw_probabilities(counts, [1], 0.1) == pytest.approx([0.1] * 10)  # already 20 %
    assert draw_probabilities(counts, [], 0.5) == pytest.approx([0.1] * 10)


def test_the_sampler_is_seeded_and_ranks_share_one_draw():
    chances = draw_probabilities(np.array([[100, 3]] * 2 + [[100, 0]] * 8), [1], 0.5)
    gen = torch.Generator()
    sampler = OversampleSampler(chances, gen)
    gen.manual_seed(7)
    first = list(sampler)
    gen.manual_seed(7)
    assert list(sampler) == first and len(first) == len(sampler) == 10
    gen.manual_seed(8)
    assert list(sampler) != first
    halves = []
    for rank in (0, 1):
        gen.manual_seed(7)
        halves.append(list(OversampleSampler(chances, gen, rank, 2)))
    assert halves[0] == first[0::2] and halves[1] == first[1::2]
    draws = Counter()
    for seed in range(300):
        gen.manual_seed(seed)
        draws.update(sampler)
    rare_share = (draws[0] + draws[1]) / sum(draws.values())
    assert rare_share == pytest.approx(0.5, abs=0.03)  # 20 % without oversampling


def rare_dataset(root, n=20, rare=(0, 1)):
    """n 32 x 32 images: a square of class 1 in each; a 2-pixel dot of class 2 in `rare`."""
    from PIL import Image

    cmap = make_class_map(["_background_", "square", "dot"])
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    stems = [f"r{i:02d}" for i in range(n)]
    for i, stem in enumerate(stems):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:14, 4:14] = 1
        if i in rare:
            mask[20, 20:22] = 2
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        write_mask(root / "masks" / f"{stem}.png", mask, cmap)
    cmap.save(root / "classes.json")
    split = {"seed": 0, "train": stems[:16], "val": stems[16:18], "test": stems[18:]}
    (root / "split.json").write_text(json.dumps(split))
    return root, cmap


def test_rare_class_images_are_drawn_more_often_in_training(tmp_path):
    dataset, cmap = rare_dataset(tmp_path / "data")
    drawn = {}
    for share in (0.0, 0.5):
        config = TrainConfig(oversample=share, batch_size=4, workers=0, augment="none")
        data = load_data(dataset, tmp_path / "run", config, cmap, resume=False)
        hardware = Hardware(torch.device("cpu"), None, False, 0)
        loaders = build_loaders(config, cmap, data, Dist(), hardware)
        stems = Counter()
        for epoch in range(20):
            loaders.seed_epoch(epoch, epoch)
            for batch in loaders.train:
                stems.update(batch["stem"])
        drawn[share] = (stems["r00"] + stems["r01"]) / sum(stems.values())
    assert drawn[0.0] == pytest.approx(2 / 16)  # each image once an epoch
    assert drawn[0.5] == pytest.approx(0.5, abs=0.08)


def test_the_plan_oversamples_and_states_class_weights(tmp_path):
    dataset, _ = rare_dataset(tmp_path / "data")
    planned = preview_plan(dataset, device="cpu", loss="ce", class_weights="auto")
    plan = {c.option: (c.value, c.why) for c in planned.plan.choices}
    value, why = plan["oversample"]
    assert value == 0.33 and planned.config.oversample == 0.33
    assert "dot (0.02% of pixels, in 2 of 16 images)" in why  # 4 / 16,384 px and "nnU-Net" in why
    # the 16 training images: background 16·(1024-100)-2·2 px, square 1600, dot 4
    bg = (16 * 924 - 4) / (16 * 1024)
    square, dot = 1600 / (16 * 1024), 4 / (2 * 1024)
    median = sorted([bg, square, dot])[1]
    weights = [median / f for f in (bg, square, dot)]
    expected = ", ".join(
        f"{n} {w:.3g}" for n, w in zip(("_background_", "square", "dot"), weights, strict=True)
    )
    assert plan["class_weights"] == (
        "auto",
        f"median frequency over 16 training images: {expected}",
    )


def test_a_crop_run_leaves_oversampling_to_fg_crop(tmp_path):
    dataset, _ = rare_dataset(tmp_path / "data")
    planned = preview_plan(dataset, device="cpu", crop=16)
    assert "oversample" not in {c.option for c in planned.plan.choices}
    assert planned.config.oversample == 0.0


def test_the_run_records_the_class_weights_it_used(tmp_path):
    dataset, _ = rare_dataset(tmp_path / "data")
    fit(
        dataset, tmp_path / "run", epochs=1, loss="ce", class_weights="auto", batch_size=4,
        encoder="tu-resnet10t", decoder_channels="16,16,16,16,16", workers=0, device="cpu",
    )  # fmt: skip
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["options"]["class_weights"] == "auto"
    assert doc["class_weights"] == pytest.approx(
        median_frequency(np.array([[924, 100, 0]] * 14 + [[922, 100, 2]] * 2))
    )


def test_volume_folders_refuse_oversampling_and_auto_weights_in_one_line():
    from segtool.core.errors import SegtoolError
    from segtool.train.sampling import draw_sampler, resolve_class_weights

    with pytest.raises(SegtoolError, match="--oversample 0.33 draws whole images.*drop it"):
        draw_sampler(TrainConfig(oversample=0.33), None, Dist())
    with pytest.raises(SegtoolError, match="--class-weights auto measures .*0.5,1,2"):
        resolve_class_weights(TrainConfig(class_weights="auto"), object())
    assert resolve_class_weights(TrainConfig(class_weights="1,2"), object()) == (1.0, 2.0)


def test_cli_refuses_a_wrong_weight_count_in_one_line(tmp_path):
    from tests.cli import invoke

    dataset, _ = rare_dataset(tmp_path / "data")
    result = invoke(["train", str(dataset), "--out", str(tmp_path / "run"), "--loss", "ce",
                     "--class-weights", "1,2", "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert "2 weights for 3 classes (_background_, square, dot)" in result.stderr
    # One error line (after the phase line "measuring ...": the classes are known once measured).
    lines = result.stderr.strip().splitlines()
    assert [line.startswith("error:") for line in lines] == [False] * (len(lines) - 1) + [True]
    assert len(lines) <= 2 and lines[0].startswith(("measuring", "error:"))
    assert not (tmp_path / "run").exists()
    bad = invoke(["train", str(dataset), "--out", str(tmp_path / "r"), "--class-weights", "a,b"])
    assert bad.exit_code == 1 and "give auto, or one weight per class" in bad.stderr
