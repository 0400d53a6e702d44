"""`PredictSpec`: how predict runs and writes, as one frozen, checked value (free of torch).

`predict_dir` and `predict_volumes` take a spec, or the keyword options that build one; the
command line builds it once from its options. Volumes use the fields that apply to them
(`tta`, `threshold`, `probabilities`, `device`, `batch_size`, `amp`, `overwrite`,
`postprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from segtool.core.constants import BACKENDS, DEVICES
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.shards import Shard
from segtool.sources.writers.formats import ANNOTATION_FORMATS
from segtool.sources.writers.polygons import check_tolerance

#: Default overlap of neighbouring tiles (a fraction of the tile), for --tile.
TILE_OVERLAP = 0.25


@dataclass(frozen=True)
class PredictSpec:
    """How to predict.

    Attributes:
        tile: predict in ``tile x tile`` tiles (large images), blended with a Gaussian.
        overlap: the tiles' overlap, a fraction of the tile in [0, 1).
        tta: average the predictions over flips.
        threshold: binary and multi-label models: the probability cut (multi-label models
            default to the run's tuned per-class cuts, else 0.5).
        probabilities: also write the class probabilities.
        overlay_images: also write ``overlays/<stem>.jpg`` (images only).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        batch_size: images (or tiles) per forward pass.
        amp: mixed precision (None: on CUDA).
        workers: image-reading processes (None: picked for the machine).
        skip_invalid: predict the readable images and list the others (else nothing is
            written when one cannot be read).
        overwrite: replace an existing output folder.
        shard: only this shard's images (`segtool.core.shards`); an OUT that already holds
            this shard's complete output is kept and nothing is done (a resumed job).
        annotations: also write the masks as this annotation format (``--as``: labelme,
            coco, cvat, via, labelstudio), see `segtool.predict.annotations`.
        simplify: the polygons' simplification tolerance in pixels (0: exact outlines).
        embed_images: labelme files hold their image (``imageData``).
        postprocess: apply the run's post-processing chosen on the validation split
            (``postprocess.json``), if it has one.
        backend: ``torch`` (a run, or a TorchScript export) or ``onnxruntime`` (an ONNX
            export folder in place of the run).
    """

    tile: int | None = None
    overlap: float = TILE_OVERLAP
    tta: bool = False
    threshold: float | None = None
    probabilities: bool = False
    overlay_images: bool = False
    device: str = "auto"
    batch_size: int = 8
    amp: bool | None = None
    workers: int | None = None
    skip_invalid: bool = False
    overwrite: bool = False
    annotations: str | None = None
    simplify: float = 0.0
    embed_images: bool = False
    postprocess: bool = True
    shard: Shard | None = None
    backend: str = "torch"

    def __post_init__(self) -> None:
        """Check the values once, before anything is read.

        Raises:
            SegtoolError: a threshold that is no probability, a batch size below 1, an
                unknown device or backend (the engine checks the tiles' overlap).
        """
        if self.threshold is not None and not 0 <= self.threshold <= 1:  # NaN fails too
            raise SegtoolError(f"--threshold {self.threshold} must be a probability in [0, 1]")
        if self.batch_size < 1:
            raise SegtoolError(f"--batch-size {self.batch_size} must be at least 1")
        check_choice("device", self.device, DEVICES)
        if self.annotations is not None:
            check_choice("as", self.annotations, ANNOTATION_FORMATS)
        check_tolerance(self.simplify)
        if self.annotations is None and (self.simplify or self.embed_images):
            option = "--simplify" if self.simplify else "--embed-images"
            raise SegtoolError(f"{option} shapes the annotations of --as; add --as FORMAT")
        check_choice("backend", self.backend, BACKENDS)

    @classmethod
    def build(cls, spec: PredictSpec | None, **options: Any) -> PredictSpec:
        """`spec`, or one built from keyword `options` (not both).

        Raises:
            TypeError: an unknown option, or options beside a spec.
        """
        if spec is not None and options:
            raise TypeError(f"pass a PredictSpec or options, not both: {sorted(options)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown predict options: {unknown}")
        return spec if spec is not None else cls(**options)
