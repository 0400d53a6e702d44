"""The training plan: choices made from the dataset's fingerprint and the machine.

`plan_training` is a pure function of a `Fingerprint`, a `Machine` and the options the user
gave (each given option wins over the plan and is shown as "given"); `fit_budget` turns timed
steps into a number of epochs that ends the run within a time budget, shrinking the input
where it must. Every choice carries the reason it was made, printed as the plan table and
written into config.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from segtool.core.constants import BACKGROUND_NAME
from segtool.train.choices import Choice, Plan, given_choice
from segtool.train.config import Given
from segtool.train.decoded import choose_decoded, decoded_bytes
from segtool.train.epoch_length import SHORT_VALIDATION, plan_length, validation_interval
from segtool.train.fingerprint import Fingerprint, Machine
from segtool.train.geometry import STRIDE
from segtool.train.imbalance import (
    OVERSAMPLE_SHARE,
    describe_rare,
    median_frequency,
    rare_classes,
)
from segtool.train.limits import check_budget

#: The longest input side trained on whole images, per device; larger images are resized
#: (keeping their aspect ratio) or cut into patches of `PATCH` pixels.
MAX_SIDE = {"cpu": 256, "mps": 512, "cuda": 1024}
PATCH = {"cpu": 256, "mps": 384, "cuda": 512}
#: Below this many pixels, a downscaled object is too small to learn; patches keep it whole.
MIN_OBJECT_AREA = 64
#: (encoder, decoder channels) per device: slim on a CPU, larger with GPU memory.
SMALL_MODEL = ("tu-resnet10t", (64, 32, 16, 16, 16))
#: The fewest epochs a time budget may plan before the input is made smaller.
MIN_EPOCHS = 8
#: The smallest long side a budget may shrink the input to.
MIN_SIDE = 64


def round_to_stride(side: float) -> int:
    """The nearest multiple of `STRIDE` (at least one stride)."""
    return max(STRIDE, round(side / STRIDE) * STRIDE)


def keep_box(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The (H, W) box, in whole strides, that holds an image of `height` x `width` scaled so
    its long side is `long_side` (a multiple of the stride), aspect ratio kept."""
    scale = long_side / max(height, width)
    strides = (max(-(-round(side * scale) // STRIDE), 1) for side in (height, width))
    box_h, box_w = (n * STRIDE for n in strides)
    return box_h, box_w


def _geometry(plan: Plan, fp: Fingerprint, machine: Machine, given: Given) -> None:
    if any(given.get(k) is not None for k in ("size", "crop")):
        for option in ("size", "crop", "resize", "fg_crop"):
            given_choice(plan, given, option)
        return
    height, width = fp.median_size
    long_side, max_side = max(height, width), MAX_SIDE[machine.device]
    shape = f"median image {width}x{height}"
    if long_side <= max_side:
        plan.set("size", None, f"{shape} fits the model whole: native size")
        return
    scale = max_side / long_side
    small = fp.smallest_object()
    if small and small * scale**2 < MIN_OBJECT_AREA:
        patch = PATCH[machine.device]
        plan.set(
            "crop",
            patch,
            f"{shape}; scaled to fit, objects of {small:.0f} px would shrink to "
            f"{small * scale**2:.0f} px -> patches {patch}x{patch}",
        )
        if not given_choice(plan, given, "fg_crop"):
            rare = fp.rare()
            share = 0.5 if rare else 0.33
            why = f"rare class {rare[0].name}" if rare else "balanced classes"
            plan.set("fg_crop", share, f"{why} -> {share:.0%} of patches on foreground")
        return
    box = keep_box(height, width, max_side)
    plan.set("size", box, f"{shape} -> {box[1]}x{box[0]}, aspect kept")
    if not given_choice(plan, given, "resize"):
        plan.set("resize", "keep", "pad with the ignore value instead of squashing")


def _model(plan: Plan, machine: Machine, given: Given) -> None:
    if given_choice(plan, given, "encoder"):
        given_choice(plan, given, "decoder_channels")
        return
    if machine.device == "cpu" or machine.memory_gb < 6:
        where = "CPU" if machine.device == "cpu" else f"{machine.memory_gb:.0f} GB GPU"
        plan.set("encoder", SMALL_MODEL[0], f"{where}: a small, fast encoder")
        if not given_choice(plan, given, "decoder_channels"):
            plan.set("decoder_channels", SMALL_MODEL[1], "a slim decoder to match")
        return
    encoder = "resnet34" if machine.memory_gb >= 12 else "resnet18"
    plan.set("encoder", encoder, f"{machine.device.upper()} with {machine.memory_gb:.0f} GB")
    given_choice(plan, given, "decoder_channels")


def plan_batch(
    plan: Plan,
    machine: Machine,
    given: Given,
    n_train: int,
    items: str,
    probed: bool | Choice = True,
) -> None:
    """The batch size: given; else the GPU probe's (`probed`, its choice), or before the probe
    small on a CPU, a start on a GPU (which the probe raises, when `probed`); never more than
    the `n_train` training `items` (images, or slices)."""
    if given_choice(plan, given, "batch_size"):
        return
    if isinstance(probed, Choice):
        batch, why = probed.value, probed.why
    elif machine.device == "cpu":
        batch, why = 4, "CPU: small batches, more steps per second of compute"
    else:
        start = "a start the GPU probe may raise" if probed else f"8 {items} a step"
        batch, why = 8, f"{machine.device.upper()}: {start}"
    if batch > n_train:
        batch, why = max(n_train, 1), f"only {n_train} training {items}"
    plan.set("batch_size", batch, why)


def _batch_size(
    plan: Plan, fp: Fingerprint, machine: Machine, given: Given, probed: Choice | None
) -> None:
    n_train = max(int(fp.n_images * given.config.train_share), 1)
    plan_batch(plan, machine, given, n_train, "images", probed or True)


def _training(plan: Plan, fp: Fingerprint, machine: Machine, given: Given) -> None:
    if not given_choice(plan, given, "augment"):
        if fp.n_images < 30:
            plan.set("augment", "strong", f"{fp.n_images} images: strong augmentation")
        else:
            plan.set("augment", "light", f"{fp.n_images} images: light augmentation")
    _augment_on(plan, machine, given)
    if not given_choice(plan, given, "lr") and given.get("encoder_weights") in (None, "none"):
        plan.set("lr", 2e-3, "weights learnt from scratch: a higher peak rate")


def _augment_on(plan: Plan, machine: Machine, given: Given) -> None:
    """Where augmentation runs: the light preset on a GPU as whole batches there (its
    loader then only reads); elsewhere albumentations in the loader (the strong preset's
    elastic and colour transforms are its alone)."""
    if given_choice(plan, given, "augment_on"):
        return
    preset = plan.options().get("augment", given.config.augment)
    if machine.device == "cuda" and preset == "light":
        why = "GPU: flips, affine and brightness/contrast of whole batches there"
        plan.set("augment_on", "device", why)
    elif preset != "none":
        where = "strong: elastic and colour" if preset == "strong" else "CPU"
        plan.set("augment_on", "cpu", f"{where}: albumentations in the loader")


def _imbalance(plan: Plan, fp: Fingerprint, given: Given) -> None:
    """Oversampling of images holding rare classes (whole images only: patches are centred
    on foreground by --fg-crop instead), and --class-weights auto's values, from the
    training split's counts."""
    counts = fp.train_counts()
    names = [BACKGROUND_NAME, *(c.name for c in fp.classes)]
    if given.config.class_weights == "auto" and counts.size:
        weights = median_frequency(counts)
        shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(names, weights, strict=True))
        why = f"median frequency over {len(counts)} training images: {shown}"
        plan.set("class_weights", "auto", why)
    if given_choice(plan, given, "oversample"):
        return
    if plan.options().get("crop") or not counts.size:  # patches; or nothing measured
        return
    rare = rare_classes(counts)
    if not rare:
        plan.set("oversample", 0.0, "no rare class in the training split: uniform draws")
        return
    natural = float((counts[:, rare] > 0).any(axis=1).mean())
    if natural >= OVERSAMPLE_SHARE:
        why = f"rare {describe_rare(counts, rare, names)}, already in {natural:.0%} of images"
        plan.set("oversample", 0.0, f"{why}: uniform draws")
        return
    plan.set(
        "oversample", OVERSAMPLE_SHARE, f"rare {describe_rare(counts, rare, names)} -> "
        f"{OVERSAMPLE_SHARE:.0%} of draws from images holding it (as nnU-Net's foreground "
        f"patches)",
    )  # fmt: skip


def _decoded(plan: Plan, fp: Fingerprint, machine: Machine, given: Given) -> None:
    """The images the run reads (training and validation), decoded at the planned geometry:
    in RAM or a memory-mapped file."""
    if given_choice(plan, given, "decoded"):
        return
    height, width = plan.options().get("size") or fp.median_size
    used = max(round(fp.n_images * (1 - given.config.test)), 1)
    free = machine.free_ram_gb * 2**30
    value, why = choose_decoded(decoded_bytes(used, height, width), free, machine.processes)
    plan.set("decoded", value, f"{used} images decode to {why}")


def plan_training(
    fp: Fingerprint, machine: Machine, given: Given, probed: Choice | None = None
) -> Plan:
    """Choose geometry, model, batch size, augmentation, learning rate and epochs.

    Args:
        fp: the dataset's fingerprint.
        machine: the device the run will use.
        given: the options the user set; each wins over the plan (the training share, what
            ``val`` and ``test`` leave, sizes the batch and the epochs).
        probed: the batch size the GPU probe found (``batch_size``, its value and why), or
            None before probing: the epochs, their steps and the validation interval are
            planned for the batch the plan ends with (a given batch size wins over both).

    Returns:
        The plan; its `options()` are `TrainConfig` fields.
    """
    plan = Plan()
    _geometry(plan, fp, machine, given)
    _model(plan, machine, given)
    _batch_size(plan, fp, machine, given, probed)
    _training(plan, fp, machine, given)
    plan_length(plan, fp, machine, given)
    _imbalance(plan, fp, given)
    _decoded(plan, fp, machine, given)
    rare = fp.rare()
    if not given_choice(plan, given, "loss") and rare and not plan.options().get("crop"):
        names = ", ".join(f"{c.name} ({c.share:.2%})" for c in rare[:3])
        plan.set("loss", "bce-dice", f"rare {names}: its Dice term weighs classes equally")
    return plan


@dataclass
class Timing:
    """Seconds measured for one configuration."""

    step: float  #: one training step
    steps_per_epoch: int
    validation: float  #: one validation pass
    fixed: float  #: already spent, plus what the run spends once (building, saving)
    val_batches: int | None = None  #: batches of a validation pass (None: not counted)


def epochs_within(
    timing: Timing, budget: float, per_epoch_overhead: float = 0.3, val_every: int = 1
) -> int:
    """How many epochs fit in `budget` seconds, validating every `val_every` epochs and
    after the last."""
    epoch = timing.step * timing.steps_per_epoch + timing.validation / val_every
    final = timing.validation * (1 - 1 / val_every)  # the last epoch validates in any case
    return max(int((budget - timing.fixed - final) // (epoch + per_epoch_overhead)), 0)


def fit_budget(plan: Plan, fp: Fingerprint, timing: Timing, budget: float) -> None:
    """Set the plan's epochs so the run ends within `budget` seconds; when fewer than
    `MIN_EPOCHS` fit, shrink the input (keeping its aspect ratio) until they do, the long
    side reaches `MIN_SIDE`, or the smallest objects would shrink below half of
    `MIN_OBJECT_AREA` (step time taken as proportional to pixels).

    Args:
        plan: the plan, updated in place (a given ``epochs`` is kept).
        fp: the fingerprint (image sizes).
        timing: the measured step and validation times at the plan's geometry.
        budget: seconds for the whole run.
    """
    options = plan.options()
    every = _budget_interval(plan, timing, budget)
    epochs = epochs_within(timing, budget, val_every=every)
    given_geometry = any(c.why == "given" for c in plan.choices if c.option in ("size", "crop"))
    height, width = _input_shape(options, fp)
    final = timing
    if epochs < MIN_EPOCHS and not given_geometry:
        long_side = max(height, width)
        # Shrink no further than objects stay visible (half of MIN_OBJECT_AREA).
        smallest = fp.smallest_object() * (long_side / max(fp.median_size)) ** 2 or math.inf
        while (
            epochs < MIN_EPOCHS
            and long_side * 0.75 >= MIN_SIDE
            and smallest * 0.75**2 >= MIN_OBJECT_AREA / 2
        ):
            smallest *= 0.75**2
            long_side = round_to_stride(long_side * 0.75)
            box = keep_box(fp.median_size[0], fp.median_size[1], long_side)
            ratio = box[0] * box[1] / (height * width)
            scaled = replace(timing, step=timing.step * ratio, validation=timing.validation * ratio)
            epochs, final = epochs_within(scaled, budget, val_every=every), scaled
        if long_side != max(height, width):
            plan.set("crop", None, "whole images fit the budget better")
            plan.set("size", box, f"{budget:.0f}s budget -> {box[1]}x{box[0]}")
            plan.set("resize", "keep", "pad with the ignore value instead of squashing")
    check_budget(final, budget, epochs)
    if any(c.option == "epochs" and c.why == "given" for c in plan.choices):
        return
    plan.set("epochs", epochs, f"{budget:.0f}s budget, {timing.step:.2f}s a step")


def _budget_interval(plan: Plan, timing: Timing, budget: float) -> int:
    """The plan's validation interval, chosen again from the measured times (a given one
    stays): validation every k epochs, k for as many epochs as fit validating each."""
    choice = next((c for c in plan.choices if c.option == "val_every"), None)
    if choice is not None and choice.why == "given":
        return int(choice.value)
    if timing.val_batches is not None and timing.val_batches < SHORT_VALIDATION:
        plan.set(
            "val_every", 1, f"{timing.val_batches} validation batches: a short pass, every epoch"
        )
        return 1
    epoch = timing.step * timing.steps_per_epoch
    every = validation_interval(timing.validation, epoch, epochs_within(timing, budget))
    share = timing.validation / max(epoch * every + timing.validation, 1e-9)
    plan.set("val_every", every, f"measured: a validation pass ~{share:.0%} of the time"
             + (f" every {every} epochs" if every > 1 else ""))  # fmt: skip
    return every


def _input_shape(options: dict[str, Any], fp: Fingerprint) -> tuple[int, int]:
    if options.get("crop"):
        return options["crop"], options["crop"]
    if options.get("size") is not None:
        return options["size"]
    return fp.median_size
