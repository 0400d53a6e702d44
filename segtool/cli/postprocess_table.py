"""The post-processing chosen on a run's validation split, as segtool train prints it."""

from __future__ import annotations

from pathlib import Path

from segtool.cli.common import note, table
from segtool.core.postprocess import Rule


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def print_postprocess(document: dict, path: Path) -> None:
    """Per class: the rule chosen (or none) and the validation Dice without and with it; the
    foreground means; where the choice is saved."""
    unit, rules = document["unit"], document["rules"]
    rows: list = []
    for name, without in document["val_dice_without"].items():
        rule = Rule.from_json(rules[name]).describe(unit) if name in rules else "none"
        rows.append([name, rule, _fmt(without), _fmt(document["val_dice_with"][name])])
    rows += [
        None,
        [
            "mean",
            "",
            _fmt(document["mean_val_dice_without"]),
            _fmt(document["mean_val_dice_with"]),
        ],
    ]
    title = (
        f"post-processing chosen on the validation split ({document['items']} "
        f"{document['item']}s; a rule is kept only where it raises the class's Dice)"
    )
    table(title, ["class", "post-processing", "val Dice without", "with"], rows)
    note(
        f"saved in {path}: segtool predict and evaluate --model apply it; --no-postprocess "
        "turns it off"
    )
