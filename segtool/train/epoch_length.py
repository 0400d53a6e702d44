"""How long a planned epoch is, how many there are and how often they validate: the plan's
choices that follow from the batch size (`plan_length`), so they are planned again for the
batch the GPU probe finds.

An epoch is one pass over the training split, or on a GPU, where a pass is short,
`EPOCH_STEPS` steps drawn from successive shuffled passes (as nnU-Net's 250 iterations), so an
epoch's end (validation, saving, the loader's turn-around) stays a small share of the run, and
fewer epochs keep the steps the plan aimed for; validation every k epochs keeps its share of
the time near `VALIDATION_SHARE` (`validation_interval`).

The CPU keeps one pass: its steps are slow, so its epochs are long already.
"""

from __future__ import annotations

import math
from typing import Any

from segtool.train.choices import Plan, given_choice
from segtool.train.config import Given
from segtool.train.fingerprint import Fingerprint, Machine

#: Optimiser steps a run without a budget aims for, per device.
TARGET_STEPS = {"cpu": 300, "mps": 1500, "cuda": 3000}
#: The steps of a planned epoch on a GPU where one pass over the training split is shorter.
EPOCH_STEPS = 250
#: The fewest epochs the plan makes (the best model is chosen among their validations, and
#: warm-up takes the first): an epoch gets fewer than `EPOCH_STEPS` steps before fewer epochs.
FEWEST_EPOCHS = 10
#: The most epochs the plan makes.
MOST_EPOCHS = 200
#: The share of a run's time that validation may take: past it, validate every k epochs.
VALIDATION_SHARE = 0.10
#: The fewest validations a run's epochs keep (the best model is chosen among them).
MIN_VALIDATIONS = 5
#: A validation batch, until a validation pass is measured, guessed at this share of a
#: training step (a forward pass without the backward one, and counting).
VALIDATION_PER_STEP = 0.5
#: Below this many validation batches a pass is short: every epoch validates.
SHORT_VALIDATION = 20


def epochs_for(target: int, steps: int) -> int:
    """Epochs of `steps` steps for about `target` steps in all (`FEWEST_EPOCHS` to
    `MOST_EPOCHS`)."""
    return min(max(math.ceil(target / steps), FEWEST_EPOCHS), MOST_EPOCHS)


def plan_epochs(plan: Plan, machine: Machine, given: Given, steps: int, of: str = "") -> None:
    """The epochs: given; else about `TARGET_STEPS` of the device at `steps` an epoch (10 to
    200 epochs); `of` says what an epoch's steps are made of."""
    if given_choice(plan, given, "epochs"):
        return
    target = TARGET_STEPS[machine.device]
    plan.set("epochs", epochs_for(target, steps), f"about {target} steps of {steps} per epoch{of}")


def plan_length(plan: Plan, fp: Fingerprint, machine: Machine, given: Given) -> None:
    """The epochs, the steps of each (``epoch_steps``) and the validation interval, for the
    batch size `plan` holds: planned again when the GPU probe changes it (each given option
    kept)."""
    batch = plan.options().get("batch_size") or given.config.batch_size
    one_pass = max(math.ceil(fp.n_images * given.config.train_share / batch), 1)
    plan_epochs(plan, machine, given, one_pass)
    target, epochs = TARGET_STEPS[machine.device], plan.options()["epochs"]
    for choice in plan_epoch_steps(machine, given, one_pass, batch, target, epochs):
        plan.set(*choice)  # on a GPU, epochs of more than one short pass
    _validation(plan, fp, given, batch, one_pass)


def _validation(plan: Plan, fp: Fingerprint, given: Given, batch: int, one_pass: int) -> None:
    """Validate every k epochs when a pass (its batches at `VALIDATION_PER_STEP` of a step)
    would take more than `VALIDATION_SHARE` of the time."""
    if given_choice(plan, given, "val_every"):
        return
    options = plan.options()
    train = options.get("epoch_steps") or one_pass
    val = math.ceil(fp.n_images * given.config.val / batch)
    if val < SHORT_VALIDATION:
        plan.set("val_every", 1, f"{val} validation batches: a short pass, every epoch")
        return
    every = validation_interval(val * VALIDATION_PER_STEP, train, options["epochs"])
    share = val * VALIDATION_PER_STEP / max(train * every + val * VALIDATION_PER_STEP, 1e-9)
    why = f"{val} validation batches against {train} training steps: ~{share:.0%} of the time"
    plan.set("val_every", every, why if every == 1 else f"{why} every {every} epochs")


def plan_epoch_steps(
    machine: Machine, given: Given, one_pass: int, batch: int, target: int, epochs: int
) -> list[tuple[str, Any, str]]:
    """Steps an epoch (``epoch_steps``) and, where they change, the `epochs` planned for
    them, as the plan's (option, value, why) choices.

    Given: kept, and planned epochs count in its steps. Else, where the epochs are planned
    from `target` steps (no ``--epochs``, no ``--time-budget``: a budget counts epochs of one
    pass) on a GPU whose pass over the training split is `one_pass` < `EPOCH_STEPS` steps of
    `batch` images (the batch the plan ends with: the GPU probe's): epochs of `EPOCH_STEPS`
    (fewer where that would leave under `FEWEST_EPOCHS`) and as many as keep the planned
    steps; on a CPU none (one pass).
    """
    planned = given.get("epochs") is None and given.config.time_budget is None
    steps = given.get("epoch_steps")
    if steps is not None:
        choices: list[tuple[str, Any, str]] = [("epoch_steps", steps, "given")]
        if planned and steps and steps != one_pass:
            choices.append(
                ("epochs", epochs_for(target, steps), f"about {target} steps of {steps} per epoch")
            )
        return choices
    if machine.device == "cpu" or not planned or one_pass >= EPOCH_STEPS:
        return []
    total = epochs * one_pass
    steps = min(EPOCH_STEPS, total // FEWEST_EPOCHS)
    if steps <= one_pass:
        return []
    why = (
        f"{one_pass} steps a pass in batches of {batch}: epochs of {steps} drawn from "
        f"successive shuffled passes (as nnU-Net's 250), the end of each a small share of the "
        f"time"
    )
    fewer = max(round(total / steps), FEWEST_EPOCHS)
    return [
        ("epoch_steps", steps, why),
        ("epochs", fewer, f"about {total} steps of {steps} per epoch"),
    ]


def validation_interval(validation: float, epoch: float, epochs: int) -> int:
    """Validate every k epochs: the smallest k for which a validation pass of `validation`
    seconds takes at most `VALIDATION_SHARE` of a cycle of k training epochs of `epoch`
    seconds and the pass, while `epochs` keep `MIN_VALIDATIONS` of them (k = 1 below)."""
    if validation <= 0 or epoch <= 0:
        return 1
    wanted = math.ceil(validation * (1 - VALIDATION_SHARE) / (VALIDATION_SHARE * epoch) - 1e-9)
    return max(min(wanted, epochs // MIN_VALIDATIONS), 1)
