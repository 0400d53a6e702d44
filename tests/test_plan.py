"""The plan: choices from synthetic fingerprints and machines, against hand-worked values; the
dataset's fingerprint measured from real files; fitting a time budget."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from segtool.core.classes import make_class_map
from segtool.core.dataset import find_pairs
from segtool.train.config import Given
from segtool.train.fingerprint import (
    ClassStats,
    Fingerprint,
    Machine,
    measure_dataset,
    measure_machine,
)
from segtool.train.loop import fit
from segtool.train.plan import MIN_EPOCHS, MIN_SIDE, Timing, fit_budget, plan_training
from tests.cli import invoke
from tests.synthetic import make_dataset

CPU = Machine("cpu", "x86_64", 8.0, 2)
H100 = Machine("cuda", "H100", 80.0, 16)
SMALL_GPU = Machine("cuda", "T4", 4.0, 4)


def fingerprint(n, height, width, *, share=0.2, images=None, obj=500.0):
    """Two foreground classes; the second with `share` of the pixels and objects of `obj` px."""
    classes = [
        ClassStats("big", 0.3, n, 5000.0),
        ClassStats("small", share, n if images is None else images, obj),
    ]
    return Fingerprint(n, (height, width), (height, width), 3, classes)


def choices(fp, machine, **given):
    return {
        c.option: (c.value, c.why) for c in plan_training(fp, machine, Given.parse(**given)).choices
    }


def test_tiny_dataset_on_a_cpu():
    plan = choices(fingerprint(10, 48, 48), CPU)
    assert plan["size"][0] is None and "native" in plan["size"][1]
    assert plan["encoder"][0] == "tu-resnet10t" and plan["decoder_channels"][0] == (
        64,
        32,
        16,
        16,
        16,
    )
    assert plan["batch_size"][0] == 4  # 7 training images: batch 4
    assert plan["augment"][0] == "strong"  # 10 images
    # 7 training images / 4 -> 2 steps an epoch; 300 steps -> 150 epochs.
    assert plan["epochs"][0] == 150
    assert "crop" not in plan


def test_the_training_share_follows_val_and_test():
    # 10 images with --val 0.5 --test 0.3: 2 train (not 70 %, 7): batch 2, one step an epoch,
    # 300 steps -> 300 epochs, capped at 200.
    plan = choices(fingerprint(10, 48, 48), CPU, val=0.5, test=0.3)
    assert plan["batch_size"] == (2, "only 2 training images")
    assert plan["epochs"] == (200, "about 300 steps of 1 per epoch")


def test_three_images_limit_the_batch():
    plan = choices(fingerprint(3, 48, 48), CPU)
    assert plan["batch_size"] == (2, "only 2 training images")


def test_huge_wide_images_on_a_big_gpu_keep_their_aspect():
    plan = choices(fingerprint(1000, 1080, 1920, obj=400.0), H100)
    # long side 1920 -> 1024: scale 0.533, objects 400 px -> 114 px (>= 64): resize, keeping
    # the aspect: 1080 * 0.533 = 576 -> box 576 x 1024.
    assert plan["size"][0] == (576, 1024) and plan["resize"][0] == "keep"
    assert "1920x1080" in plan["size"][1]
    assert plan["encoder"][0] == "resnet34" and "decoder_channels" not in plan
    # 700 training images / 8 -> 88 steps; 3000 / 88 = 34.1 -> 35 epochs of one pass, 3080
    # steps: a pass is short on a GPU, so 12 epochs of 250 steps (3080 / 250 = 12.3).
    assert plan["batch_size"][0] == 8 and plan["epoch_steps"][0] == 250
    assert plan["epochs"][0] == 12 and "3080 steps of 250" in plan["epochs"][1]
    assert plan["augment"][0] == "light"


def test_wide_images_on_a_cpu_are_resized_not_squashed():
    plan = choices(fingerprint(50, 1080, 1920, obj=20000.0), CPU)
    # 1920 -> 256: scale 0.1333; 1080 -> 144 -> two... five strides: 160.
    assert plan["size"][0] == (160, 256) and plan["resize"][0] == "keep"


def test_small_objects_in_large_images_get_patches():
    plan = choices(fingerprint(50, 1080, 1920, obj=300.0), CPU)
    # 300 px * 0.1333^2 = 5 px: too small to see after resizing -> 256 x 256 patches.
    assert plan["crop"][0] == 256 and "size" not in plan
    assert plan["fg_crop"][0] == 0.33  # no rare class


def test_a_rare_class_oversamples_foreground_patches():
    plan = choices(fingerprint(50, 1080, 1920, share=0.004, obj=100.0), H100)
    assert plan["crop"][0] == 512  # 100 px * 0.533^2 = 28 px: patches
    assert plan["fg_crop"][0] == 0.5 and "small" in plan["fg_crop"][1]


def test_a_class_in_few_images_is_rare():
    plan = choices(fingerprint(100, 128, 128, images=5), CPU)
    assert plan["loss"][0] == "bce-dice" and "small" in plan["loss"][1]


def test_a_small_gpu_gets_the_small_model():
    assert choices(fingerprint(100, 256, 256), SMALL_GPU)["encoder"][0] == "tu-resnet10t"


def test_every_given_option_wins():
    given = {"size": "96,160", "resize": "stretch", "encoder": "resnet50", "batch_size": 2,
             "epochs": 7, "augment": "none", "lr": 1e-4, "loss": "focal"}  # fmt: skip
    plan = choices(fingerprint(50, 1080, 1920, share=0.004), CPU, **given)
    for option, value in {**given, "size": (96, 160)}.items():  # parsed once, on giving
        assert plan[option] == (value, "given"), option
    assert "decoder_channels" not in plan and "crop" not in plan


def test_a_budget_sets_the_epochs():
    plan = plan_training(fingerprint(100, 128, 128), CPU, Given())
    # 20 steps of 0.5 s + 1 s validation + 0.3 s saving = 11.3 s an epoch; (300 - 20) / 11.3.
    fit_budget(plan, fingerprint(100, 128, 128), Timing(0.5, 20, 1.0, 20.0), 300.0)
    assert plan.options()["epochs"] == 24
    assert plan.options()["size"] is None  # enough epochs: the input is left alone


def test_a_tight_budget_shrinks_the_input_keeping_its_aspect():
    fp = fingerprint(100, 180, 240)
    plan = plan_training(fp, CPU, Given())
    fit_budget(plan, fp, Timing(1.0, 20, 2.0, 10.0), 120.0)  # 22.3 s an epoch: 4 epochs
    options = plan.options()
    height, width = options["size"]
    assert options["resize"] == "keep" and width > height  # 240 x 180 stays wide
    assert options["epochs"] >= MIN_EPOCHS or max(height, width) <= MIN_SIDE / 0.75
    assert max(height, width) < 240


def test_a_given_epoch_count_survives_the_budget():
    fp = fingerprint(100, 128, 128)
    plan = plan_training(fp, CPU, Given.parse(epochs=3))
    fit_budget(plan, fp, Timing(0.5, 20, 1.0, 20.0), 300.0)
    assert plan.options()["epochs"] == 3


def test_measure_a_real_dataset(tmp_path):
    root = make_dataset(tmp_path / "ds", n=6, size=48)
    class_map = make_class_map(["_background_", "square", "disc"])
    pairs, _ = find_pairs(root)
    fp = measure_dataset(pairs, class_map, jobs=2)
    assert fp.n_images == 6 and fp.median_size == (48, 48) and fp.channels == 3
    from segtool.core.masks import read_mask

    masks = [read_mask(p.mask) for p in pairs]
    total = sum(m.size for m in masks)
    for c, stats in enumerate(fp.classes, start=1):
        assert stats.share == pytest.approx(sum(int((m == c).sum()) for m in masks) / total)
        assert stats.images == 6
    for c, stats in enumerate(fp.classes, start=1):  # scipy's labelling, 8-connected
        areas = []
        for m in masks:
            labels, _ = ndimage.label(m == c, structure=np.ones((3, 3)))
            areas += np.bincount(labels.ravel())[1:].tolist()
        assert stats.median_object == np.median(areas)
    assert fp.smallest_object() == min(s.median_object for s in fp.classes)


def test_a_budget_does_not_shrink_small_objects_out_of_sight():
    fp = fingerprint(100, 180, 240, obj=40.0)  # 40 px * 0.75^2 = 22.5 px: below 32 px
    plan = plan_training(fp, CPU, Given())
    fit_budget(plan, fp, Timing(1.0, 20, 2.0, 10.0), 120.0)
    assert plan.options()["size"] is None and plan.options()["epochs"] == 4


def test_plan_only_prints_the_plan_and_writes_nothing(tmp_path):
    dataset = make_dataset(tmp_path / "ds", n=8, size=48)
    run = tmp_path / "run"
    args = ["train", str(dataset), "--out", str(run), "--plan-only", "--batch-size", "2"]
    result = invoke(args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "--encoder" in result.stdout and "tu-resnet10t" in result.stdout
    assert "given" in result.stdout and not run.exists()


def test_a_time_budget_run_stops_when_its_budget_is_spent(tmp_path, monkeypatch):
    """The stop rule end to end, on an injected clock: each epoch is made to take 1,200 s of
    a 3,600 s budget, so the run re-plans after every epoch and stops after exactly three,
    however fast or loaded the machine is."""
    from functools import partial

    from segtool.train import loop, pacing
    from segtool.train.budget import Budget
    from segtool.train.trainer import Trainer

    now = [0.0]
    monkeypatch.setattr(loop, "Budget", partial(Budget, clock=lambda: now[0]))
    # The 1,200 s land in the epoch's end, which the budget would read as validation and
    # keep six times over for the command's end: here nothing runs after the last epoch.
    monkeypatch.setattr(pacing, "ENDING_PASSES", 0)
    end_of_epoch = Trainer.on_epoch_end

    def epoch_takes_1200s(self, *args, **kwargs):
        now[0] += 1200.0
        return end_of_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "on_epoch_end", epoch_takes_1200s)
    dataset = make_dataset(tmp_path / "ds", n=16, size=48)
    result = fit(dataset, tmp_path / "run", time_budget=3600, workers=0, clock=0.0)
    assert result.epochs_done == 3
    with open(tmp_path / "run" / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["time_budget"] == 3600
    assert config["options"]["epochs"] == 3
    why = {c["option"]: c["why"] for c in config["plan"]["choices"]}
    assert "budget" in why["epochs"] and config["plan"]["machine"]["device"] == "cpu"


@pytest.mark.parametrize("decoded", [None, "disk"])
def test_plan_only_with_a_budget_times_the_runs_own_first_steps_and_writes_nothing(
    tmp_path, monkeypatch, decoded
):
    """Timing the first steps builds the run's data as the run does; a decoded cache on disk
    (planned where the images outgrow RAM) is built in a scratch folder that goes at the end,
    not in the folder the command was started from (it once wrote ./cache there)."""
    import tempfile

    from segtool.train.loop import preview_plan

    dataset = make_dataset(tmp_path / "ds", n=8, size=48)
    for folder in ("cwd", "tmp"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ours = tmp_path / "ds", tmp_path / "cwd"
    before = sorted(p for folder in ours for p in folder.rglob("*"))
    planned = preview_plan(dataset, time_budget="30s", workers=0, decoded=decoded)
    why = {c.option: c.why for c in planned.plan.choices}
    assert "30s budget" in why["epochs"] and planned.config.time_budget == 30.0
    assert planned.config.epochs == planned.plan.options()["epochs"] >= 1
    assert planned.config.decoded == (decoded or planned.plan.options()["decoded"])
    assert sorted(p for folder in ours for p in folder.rglob("*")) == before
    assert not [p for p in (tmp_path / "tmp").iterdir() if "segtool" in p.name]


def test_torchrun_processes_each_hold_the_decoded_images_so_the_ram_rule_counts_them(monkeypatch):
    # 1,000 images of 512 x 512 decode to 1,000 MB (RGB and mask); a quarter of 8 GB holds one
    # copy, not eight (one per GPU, each process decoding its own).
    fp = fingerprint(1176, 512, 512)  # 85 % of it is read (the test split is not)
    one = Machine("cuda", "H100", 80.0, 16, 8.0)
    assert choices(fp, one)["decoded"][0] == "ram"
    eight = Machine("cuda", "H100", 80.0, 16, 8.0, processes=8)
    value, why = choices(fp, eight)["decoded"]
    assert value == "disk" and "shared by 8 processes" in why
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert measure_machine("cpu").processes == 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert measure_machine("cpu").processes == 16  # one machine: all of them
