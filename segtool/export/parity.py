"""The parity check: an exported model against the run's own, through predict's engine, on
real images."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segtool.core.errors import SegtoolError
from segtool.export.spec import LABEL_TOLERANCE, LOGIT_TOLERANCE
from segtool.predict.engine import Engine
from segtool.predict.folder import decision_thresholds
from segtool.predict.predictor import Predictor
from segtool.predict.reading import image_loader, readable


@dataclass
class Parity:
    """How far an exported model is from the run's, on `images` images."""

    images: int
    source: str
    max_logit_diff: float = 0.0
    differing: int = 0
    pixels: int = 0
    tolerance: float = LOGIT_TOLERANCE
    label_tolerance: float = LABEL_TOLERANCE

    @property
    def differing_share(self) -> float:
        """The share of pixels whose label differs."""
        return self.differing / self.pixels if self.pixels else 0.0

    @property
    def passed(self) -> bool:
        """Both differences within their tolerances."""
        return (
            self.max_logit_diff <= self.tolerance and self.differing_share <= self.label_tolerance
        )

    def to_json(self) -> dict[str, Any]:
        """The check as written into ``segtool.json``."""
        doc = dataclasses.asdict(self)
        doc["differing_share"] = self.differing_share
        return doc


class _Recorder:
    """A forward function that keeps what it returned."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.forward = forward
        self.logits: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward(x)
        self.logits.append(out.detach().float())
        return out


def check_parity(
    reference: Predictor, exported: Predictor, paths: list[Path], parity: Parity
) -> Parity:
    """Predict `paths` with both, as predict does (the run's geometry and thresholds, on the
    CPU, in float32, read and batched by predict's reader: images of one padded size
    together, so that no image is checked padded to a neighbour's size), and fill in
    `parity`: the largest |logit difference| over every forward pass, and the pixels whose
    final label differs.

    Raises:
        SegtoolError: an image that cannot be read.
    """
    device = torch.device("cpu")
    ours, theirs = _Recorder(reference.model), _Recorder(exported.model)
    engines = [
        Engine(dataclasses.replace(p, model=rec), device, amp=False)
        for p, rec in ((reference, ours), (exported, theirs))
    ]
    cut = decision_thresholds(reference, None, [])
    paths, sizes, bad = readable(paths)
    if bad:
        raise SegtoolError(bad[0])
    batches = image_loader(paths, sizes, engines[0], engines[0].batch_size, workers=0)
    with torch.no_grad():
        for batch in batches:
            if problem := next((item["error"] for item in batch if "error" in item), None):
                raise SegtoolError(problem)
            inputs = [item["input"] for item in batch]
            ref, exp = (engine.probabilities(inputs) for engine in engines)
            for a, b in zip(ref, exp, strict=True):
                la, lb = engines[0].labels(a, cut), engines[1].labels(b, cut)
                parity.differing += int((la != lb).sum())
                parity.pixels += la.size
            for a, b in zip(ours.logits, theirs.logits, strict=True):
                parity.max_logit_diff = max(parity.max_logit_diff, float((a - b).abs().max()))
            ours.logits.clear()
            theirs.logits.clear()
    return parity
