"""`EvalSpec`: every option of ``segtool evaluate``, typed, checked once.

`evaluate_dirs` and `evaluate_model` take one (or keyword arguments that build one), so the
options travel as one frozen value instead of a dozen keyword arguments per function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from segtool.core.errors import check_choice

#: What --split accepts with --model: a split of the run's split.json, or every image the
#: model was not trained on.
SPLITS = ("test", "val", "train", "all")


@dataclass(frozen=True)
class EvalSpec:
    """How to score (`evaluate_dirs`), and with --model how to predict first (`evaluate_model`).

    Attributes:
        classes: a ``classes.json``; default: the one beside or inside the references (a
            volume folder's ``dataset.json`` for NIfTI references), else the ids found.
        out: where the report goes; default: the predictions folder, or
            ``RUN/evaluation/<split or folder>`` with a model.
        with_hd95: compute HD95 (the slowest metric).
        jobs: worker processes; None: every core (none for small folders without HD95).
        allow_missing: score references without a prediction as empty predictions.
        only: score only these stems (images) or case names (volumes).
        gallery: also draw the N images (or cases) with the lowest Dice into ``OUT/gallery/``.
        images: where the gallery finds the images (default: ``images/``, or ``imagesTr/``,
            beside the references).
        regions: ``"name=id,id;..."``: score unions of exclusive class ids as overlapping
            regions (each its own binary problem).
        bit_predictions: the predictions already hold region bits (a --regions model's).
        overwrite: replace existing outputs (each whole, once complete).
        split: with a model: which split of the run's dataset (``test`` by default; any
            other folder is a separate test set, scored whole).
        device: with a model: ``auto``, ``cpu``, ``cuda``, ``mps``.
        batch_size: with a model: images (or slices) per step; None: predict's default for
            the kind (4 images, 8 slices).
        tta: with a model: average flipped predictions.
    """

    classes: Path | None = None
    out: Path | None = None
    with_hd95: bool = True
    jobs: int | None = None
    allow_missing: bool = False
    only: frozenset[str] | None = None
    gallery: int = 0
    images: Path | None = None
    regions: str | None = None
    bit_predictions: bool = False
    overwrite: bool = False
    split: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        if self.only is not None and not isinstance(self.only, frozenset):
            object.__setattr__(self, "only", frozenset(self.only))
        if self.split is not None:
            check_choice("split", self.split, SPLITS)

    @classmethod
    def build(cls, spec: EvalSpec | None, options: Mapping[str, object]) -> EvalSpec:
        """`spec` (default: all defaults) with `options` (field names) replacing its values.

        Raises:
            TypeError: an option that is not a field, as for any unknown keyword argument.
        """
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        return replace(spec or cls(), **options)
