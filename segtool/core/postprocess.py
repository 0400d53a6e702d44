"""Post-processing of predicted masks: per class, keep the largest connected component, or
drop the components under N pixels (voxels for volumes), as nnU-Net's and MONAI's
``KeepLargestConnectedComponent`` / ``RemoveSmallObjects``.

A rule is chosen per class on a run's validation split only when it raises that class's
Dice (`segtool.evaluate.postprocess`), kept in the run's ``postprocess.json`` (read and
written by `segtool.train.runfolder.RunFolder`) and applied by predict to every mask it
writes. Components are `segtool.core.objects.label_components`' (full connectivity: corner
neighbours join, in 2-D and 3-D), the one component code of segtool.

The choice is computed from each component's counts (`ComponentCounts`): which components
a rule keeps depends only on their sizes, so every candidate is scored without redrawing a
mask; `apply_rules` is what predict runs, and the tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segtool.core.errors import SegtoolError
from segtool.core.objects import label_components

if TYPE_CHECKING:
    import numpy as np

#: The rule that keeps a class's largest component only.
LARGEST = "largest"
#: The rule that drops a class's components under ``min_size`` pixels (voxels).
MIN_SIZE = "min_size"
RULES = (LARGEST, MIN_SIZE)
#: The sizes tried for `MIN_SIZE`: 4, 8, 16, ... 2**20 pixels (voxels).
MIN_SIZES = tuple(2**k for k in range(2, 21))


@dataclass(frozen=True)
class Rule:
    """One class's post-processing: `LARGEST`, or `MIN_SIZE` with its `min_size`."""

    kind: str
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"post-processing rule {self.kind!r} is not one of {RULES}")
        if self.kind == MIN_SIZE and self.min_size < 1:
            raise ValueError(f"min_size {self.min_size} must be at least 1")

    def describe(self, unit: str = "pixels") -> str:
        """The rule in words, as printed."""
        if self.kind == LARGEST:
            return "keep the largest component"
        return f"drop components under {self.min_size} {unit}"

    def to_json(self) -> dict:
        """The rule as ``postprocess.json`` holds it."""
        if self.kind == LARGEST:
            return {"rule": LARGEST}
        return {"rule": MIN_SIZE, "min_size": self.min_size}

    @classmethod
    def from_json(cls, doc: object) -> Rule:
        """A rule from ``postprocess.json``.

        Raises:
            SegtoolError: not a rule (the caller names the file).
        """
        if not isinstance(doc, dict) or doc.get("rule") not in RULES:
            raise SegtoolError(f"{doc!r:.60} is not a post-processing rule ({', '.join(RULES)})")
        size = doc.get("min_size", 0)
        if doc["rule"] == MIN_SIZE and (not isinstance(size, int) or size < 1):
            raise SegtoolError(f"min_size {size!r} must be a whole number of at least 1")
        return cls(doc["rule"], size if doc["rule"] == MIN_SIZE else 0)

    def keeps(self, sizes: np.ndarray) -> np.ndarray:
        """Which components (by their sizes, in component order) the rule keeps."""
        import numpy as np

        if self.kind == MIN_SIZE:
            return sizes >= self.min_size
        kept = np.zeros(len(sizes), dtype=bool)
        if len(sizes):
            kept[int(np.argmax(sizes))] = True  # the first of equal largest ones
        return kept


def class_plane(labels: np.ndarray, class_id: int, multilabel: bool) -> np.ndarray:
    """Where a mask predicts class `class_id`: its value (label masks) or its bit, ``class_id
    - 1`` (multi-label masks)."""
    if multilabel:
        return (labels & labels.dtype.type(1 << (class_id - 1))) != 0
    return labels == class_id


def apply_rules(labels: np.ndarray, rules: Mapping[int, Rule], multilabel: bool) -> np.ndarray:
    """`labels` with each class's rule applied: the pixels of the components a rule drops
    become background (label masks) or lose the class's bit (multi-label masks).

    Args:
        labels: a predicted mask, 2-D or 3-D (components are found in all its axes).
        rules: class id -> rule; classes without one are left as they are.
        multilabel: the mask holds bit sets.

    Returns:
        A new array (`labels` itself is not changed).
    """
    import numpy as np

    out = labels.copy()
    for class_id, rule in rules.items():
        plane = class_plane(labels, class_id, multilabel)
        if not plane.any():
            continue
        ids, n = label_components(plane)
        kept = np.concatenate([[False], rule.keeps(np.bincount(ids.ravel(), minlength=n + 1)[1:])])
        dropped = plane & ~kept[ids]
        if multilabel:
            out[dropped] &= ~labels.dtype.type(1 << (class_id - 1))
        else:
            out[dropped] = 0
    return out


@dataclass
class ComponentCounts:
    """One class's predicted components in one image (or case), for scoring rules.

    Attributes:
        sizes: each component's size, every pixel (what the rules look at).
        tp: each component's pixels that the reference holds as the class.
        fp: each component's counted pixels (the reference does not ignore them) that the
            reference does not hold as the class.
        reference: the reference's pixels of the class.
    """

    sizes: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    reference: int

    @classmethod
    def of(
        cls, plane: np.ndarray, reference: np.ndarray, counted_prediction: np.ndarray
    ) -> ComponentCounts:
        """The counts from the prediction's whole `plane`, the `reference` mask and the
        prediction's counted pixels (`segtool.core.objects.class_masks`' rule)."""
        import numpy as np

        ids, n = label_components(plane)
        size = n + 1
        return cls(
            np.bincount(ids.ravel(), minlength=size)[1:],
            np.bincount(ids[reference & counted_prediction], minlength=size)[1:],
            np.bincount(ids[counted_prediction & ~reference], minlength=size)[1:],
            int(np.count_nonzero(reference)),
        )

    def counts(self, rule: Rule | None) -> tuple[int, int, int]:
        """(TP, FP, FN) of the class after `rule` (None: as predicted)."""
        kept = slice(None) if rule is None else rule.keeps(self.sizes)
        tp, fp = int(self.tp[kept].sum()), int(self.fp[kept].sum())
        return tp, fp, self.reference - tp


def candidates(items: list[ComponentCounts]) -> list[Rule]:
    """The rules worth trying for a class: each `MIN_SIZES` size up to the largest predicted
    component (a larger one drops no more), then `LARGEST`."""
    largest = max((int(c.sizes.max()) for c in items if len(c.sizes)), default=0)
    rules = [Rule(MIN_SIZE, n) for n in MIN_SIZES if n <= largest]
    return [*rules, Rule(LARGEST)]


def _dice(counts: tuple[int, int, int]) -> float | None:
    """The class's Dice from (TP, FP, FN) by `segtool.core.metrics.dice`; None when the class
    is absent from both masks (JSON has no NaN)."""
    import numpy as np

    from segtool.core.metrics import Counts, dice

    value = float(dice(Counts(*(np.array([n]) for n in counts)))[0])
    return None if value != value else value


def _pooled(items: list[ComponentCounts], rule: Rule | None) -> tuple[int, int, int]:
    totals = [item.counts(rule) for item in items]
    return tuple(int(sum(t[i] for t in totals)) for i in range(3))  # type: ignore[return-value]


def choose_rules(per_class: Mapping[str, list[ComponentCounts]]) -> dict:
    """Per class, the rule with the highest Dice pooled over the items, kept only when it is
    higher than the Dice without post-processing (ties go to the smallest size dropped, then
    to keeping the largest component; an equal Dice keeps none), as nnU-Net's choice.

    Args:
        per_class: class name -> its `ComponentCounts` in each validation item.

    Returns:
        ``rules`` (by class name, the chosen ones only), ``val_dice_without`` and
        ``val_dice_with`` (by class name), their foreground means ``mean_val_dice_without``
        and ``mean_val_dice_with``, and ``tried`` (each class's candidates and their Dice).
    """
    from segtool.core.metrics import nanmean

    rules: dict[str, dict] = {}
    without: dict[str, float | None] = {}
    with_rules: dict[str, float | None] = {}
    tried: dict[str, dict[str, float | None]] = {}
    for name, items in per_class.items():
        base = _dice(_pooled(items, None))
        scores = [(rule, _dice(_pooled(items, rule))) for rule in candidates(items)]
        tried[name] = {_key(rule): score for rule, score in scores}
        best_rule, best = None, base
        for rule, score in scores:
            if score is not None and (best is None or score > best):
                best_rule, best = rule, score
        without[name], with_rules[name] = base, best
        if best_rule is not None:
            rules[name] = best_rule.to_json()

    def mean(values: dict[str, float | None]) -> float | None:
        m = nanmean([float("nan") if v is None else v for v in values.values()])
        return None if m != m else m

    return {
        "rules": rules,
        "val_dice_without": without,
        "val_dice_with": with_rules,
        "mean_val_dice_without": mean(without),
        "mean_val_dice_with": mean(with_rules),
        "tried": tried,
    }


def _key(rule: Rule) -> str:
    return LARGEST if rule.kind == LARGEST else f"{MIN_SIZE} {rule.min_size}"
