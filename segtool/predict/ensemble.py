"""Several runs as one model: their probabilities averaged (each with its own geometry and
TTA), and what predicting does after the probabilities (the cut, the post-processing), in one
place for the folder commands and the in-memory predictor.

An ensemble is refused when its runs disagree on what a probability means: the class map
(names, order, multi-label or not), the input normalisation, images vs volumes, a volume's
channels and slice axis. Thresholds and post-processing belong to one run's model: an
ensemble uses them when every run has the same, else none (and says so).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtool.core.errors import SegtoolError
from segtool.core.postprocess import Rule, apply_rules
from segtool.predict.engine import Engine
from segtool.predict.exported import load_for_backend
from segtool.predict.predictor import Predictor

if TYPE_CHECKING:
    import torch

#: A model as predict and evaluate take it: a run (or model) folder, a loaded predictor, or
#: several of them (an ensemble).
Models = Path | Predictor | Sequence[Path | Predictor]


def load_predictors(
    models: Models, classes: Path | None = None, backend: str = "torch"
) -> list[Predictor]:
    """Each model loaded (`load_for_backend`: a run, or an export folder on `backend`),
    checked to agree with the first.

    Raises:
        SegtoolError: no model, a model that cannot be loaded, or runs that disagree
            (one line naming both).
    """
    items = [models] if isinstance(models, (Path, Predictor)) else list(models)
    if not items:
        raise SegtoolError("no model given; pass a run folder")
    loaded = [
        m if isinstance(m, Predictor) else load_for_backend(m, classes, backend) for m in items
    ]
    for other in loaded[1:]:
        _check_agree(loaded[0], other)
    return loaded


def _volume_facts(p: Predictor) -> tuple | None:
    settings = p.run.volume_settings() if p.run is not None else None
    return None if settings is None else (list(settings["channels"]), settings["axis"])


def _check_agree(first: Predictor, other: Predictor) -> None:
    """Refuse two runs whose probabilities cannot be averaged.

    Raises:
        SegtoolError: naming both runs and what differs.
    """
    a, b = first.class_map, other.class_map
    checks = [
        ("class maps", list(a.names), list(b.names)),
        ("modes (multi-label or not)", a.multilabel, b.multilabel),
        ("input normalisations", first.normalization, other.normalization),
        ("kinds (volumes: channels, axis)", _volume_facts(first), _volume_facts(other)),
    ]
    for what, mine, theirs in checks:
        if mine != theirs:
            raise SegtoolError(
                f"{first.source} and {other.source} cannot be ensembled: their {what} differ "
                f"({mine} vs {theirs}); ensemble runs trained on the same classes and data kind"
            )


def _shared(values: list, what: str, notes: list[str]):
    """The value every run has, or None (with a note) when they differ."""
    if all(v == values[0] for v in values[1:]):
        return values[0]
    notes.append(f"the runs' {what} differ, so the ensemble uses none")
    return None


def lead(predictors: list[Predictor], notes: list[str]) -> Predictor:
    """The predictor that stands for the ensemble in everything but the probabilities: the
    first, with the thresholds and post-processing every run shares (None if they differ)
    and, if any run resizes, a size."""
    if len(predictors) == 1:
        return predictors[0]
    sizes = [p.size for p in predictors if p.size is not None]
    return replace(
        predictors[0],
        thresholds=_shared([p.thresholds for p in predictors], "tuned thresholds", notes),
        postprocess=_shared([p.postprocess for p in predictors], "post-processing", notes),
        size=sizes[0] if sizes else None,
    )


class Ensemble:
    """Several engines as one: the mean of their probabilities (each computed with its own
    run's geometry, tiles and TTA); labels as the first engine cuts them."""

    def __init__(self, engines: list[Engine], predictor: Predictor) -> None:
        self.engines = engines
        first = engines[0]
        self.p = predictor
        self.device, self.batch_size = first.device, first.batch_size
        self.tile = first.tile
        self.channels = first.channels

    def batch_key(self, size: tuple[int, int]) -> Hashable:
        """What images must share to go through every run's model in one batch, each with
        the probabilities it gets alone: each run's `Engine.batch_key`."""
        return tuple(engine.batch_key(size) for engine in self.engines)

    @property
    def one_at_a_time(self) -> bool:
        """Whether images go one by one (a run tiles them)."""
        return any(engine.one_at_a_time for engine in self.engines)

    def probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over the runs of each image's probabilities ``(K, H, W)``."""
        total = self.engines[0].probabilities(images)
        for engine in self.engines[1:]:
            total = [t + p for t, p in zip(total, engine.probabilities(images), strict=True)]
        return [t / len(self.engines) for t in total]

    def labels_only(self, images: list[torch.Tensor]) -> None:
        """None, always (as `Engine.labels_only` where it needs the probabilities): an
        ensemble's labels come from the mean of its runs' probabilities."""
        return None

    def labels(self, probs: torch.Tensor, threshold: float | list[float] = 0.5) -> np.ndarray:
        """Class ids (or bit sets) from probabilities, as `Engine.labels`."""
        return self.engines[0].labels(probs, threshold)


def make_engine(
    predictors: list[Predictor], device: torch.device, notes: list[str], **options: object
) -> Engine | Ensemble:
    """One engine per run (`options`: `Engine`'s), as one `Ensemble` when there are several."""
    engines = [Engine(p, device, **options) for p in predictors]  # type: ignore[arg-type]
    if len(engines) == 1:
        return engines[0]
    return Ensemble(engines, lead(predictors, notes))


def rules_by_id(predictor: Predictor, enabled: bool, notes: list[str]) -> dict[int, Rule]:
    """The post-processing to apply, by class id: the run's (announced in `notes`), or none
    when `enabled` is False or the run has none."""
    rules = predictor.postprocess
    if not enabled or not rules:
        return {}
    unit = "voxels" if predictor.run is not None and predictor.run.volume_settings() else "pixels"
    shown = "; ".join(f"{name}: {rule.describe(unit)}" for name, rule in rules.items())
    notes.append(
        f"post-processing chosen on the validation split: {shown} (--no-postprocess turns it off)"
    )
    names = list(predictor.class_map.names)
    return {names.index(name): rule for name, rule in rules.items()}


def predicted(
    engine: Engine | Ensemble, inputs: list[torch.Tensor], keep: bool
) -> list[torch.Tensor] | list[np.ndarray]:
    """Each image's probabilities; or, unless they are to be kept (`keep`), its labels where
    the engine gives them straight from the logits (`Engine.labels_only`)."""
    only = None if keep else engine.labels_only(inputs)
    return engine.probabilities(inputs) if only is None else only


def finish_labels(
    engine: Engine | Ensemble,
    probs: torch.Tensor | np.ndarray,
    threshold: float | list[float],
    rules: dict[int, Rule],
) -> np.ndarray:
    """One image's mask from its probabilities (cut, or argmax), or from its labels
    (`Engine.labels_only`), then post-processed."""
    labels = probs if isinstance(probs, np.ndarray) else engine.labels(probs, threshold)
    return apply_rules(labels, rules, engine.p.class_map.multilabel) if rules else labels
