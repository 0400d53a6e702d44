"""How long a planned epoch is, how many there are and how often they validate.

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

from segtool.train.config import Given
from segtool.train.fingerprint import Machine

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


def epochs_for(target: int, steps: int) -> int:
    """Epochs of `steps` steps for about `target` steps in all (`FEWEST_EPOCHS` to
    `MOST_EPOCHS`)."""
    return min(max(math.ceil(target / steps), FEWEST_EPOCHS), MOST_EPOCHS)


def plan_epoch_steps(
    machine: Machine, given: Given, one_pass: int, target: int, epochs: int
) -> list[tuple[str, Any, str]]:
    """Steps an epoch (``epoch_steps``) and, where they change, the `epochs` planned for
    them, as the plan's (option, value, why) choices.

    Given: kept, and planned epochs count in its steps. Else, where the epochs are planned
    from `target` steps (no ``--epochs``, no ``--time-budget``: a budget counts epochs of one
    pass) on a GPU whose pass over the training split is `one_pass` < `EPOCH_STEPS` steps:
    epochs of `EPOCH_STEPS` (fewer where that would leave under `FEWEST_EPOCHS`) and as many
    as keep the planned steps; on a CPU none (one pass).
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
        f"{one_pass} steps a pass: epochs of {steps} drawn from successive shuffled passes "
        f"(as nnU-Net's 250), the end of each a small share of the time"
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
