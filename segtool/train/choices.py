"""A plan's record: each chosen option, its value and why (`Plan`), and the rule that an
option the user gave wins over the plan and is shown as "given" (`given_choice`).

The image plan (`plan.py`), its epochs and validation (`epoch_length.py`) and a volume
folder's plan (`volume_plan.py`) all write into one `Plan`, which is printed as the plan table
and kept in config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segtool.train.config import Given


@dataclass
class Choice:
    """One planned option, its value and why."""

    option: str
    value: Any
    why: str


@dataclass
class Plan:
    """The options a run trains with, and the reasons."""

    choices: list[Choice] = field(default_factory=list)

    def set(self, option: str, value: Any, why: str) -> None:
        """Choose `option` (a later choice of the same option replaces the earlier one)."""
        self.choices = [c for c in self.choices if c.option != option]
        self.choices.append(Choice(option, value, why))

    def options(self) -> dict[str, Any]:
        """The planned `TrainConfig` fields."""
        return {c.option: c.value for c in self.choices}

    def to_json(self) -> list[dict[str, Any]]:
        """The choices as plain dicts for config.json."""
        return [{"option": c.option, "value": c.value, "why": c.why} for c in self.choices]


def given_choice(plan: Plan, given: Given, option: str) -> bool:
    """Record a choice the user made; True when they made it."""
    if given.get(option) is None:
        return False
    plan.set(option, given.get(option), "given")
    return True
