"""The public in-memory predictor: a run loaded once, images predicted one at a time.

::

    from segtool import load_model
    model = load_model("run")
    labels, probs = model.predict(image)   # numpy HxWx3 / HxW, or a PIL image

Each image goes through what ``segtool predict`` does to a file (the same `normalize`, the
same `Engine` geometry, tiles and TTA, the same cut and post-processing: `finish_labels`),
so its mask equals the command's, pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core.device import pick_device
from segtool.core.errors import SegtoolError
from segtool.core.images import rgb_array
from segtool.predict.ensemble import (
    Models,
    finish_labels,
    load_predictors,
    make_engine,
    rules_by_id,
)
from segtool.predict.folder import decision_thresholds
from segtool.predict.spec import PredictSpec
from segtool.train.data import normalize

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from segtool.core.classes import ClassMap


class LoadedModel:
    """A run (or an ensemble of runs) ready to predict images in memory (`load_model`)."""

    def __init__(self, models: Models, spec: PredictSpec, classes: Path | None = None) -> None:
        predictors = load_predictors(models, classes)
        first = predictors[0]
        if first.run is not None and first.run.volume_settings() is not None:
            raise SegtoolError(
                f"{first.source}: trained on volumes; predict NIfTI volumes with segtool "
                f"predict (or segtool.predict.volumes.predict_volumes)"
            )
        #: what the user should know about how the options were applied (thresholds tuned
        #: on the validation split, the post-processing, an ensemble's disagreements)
        self.notes: list[str] = []
        self.engine = make_engine(
            predictors, pick_device(spec.device), self.notes, tile=spec.tile,
            overlap=spec.overlap, tta=spec.tta, batch_size=spec.batch_size, amp=spec.amp,
        )  # fmt: skip
        self.cut = decision_thresholds(self.engine.p, spec.threshold, self.notes)
        self.rules = rules_by_id(self.engine.p, spec.postprocess, self.notes)

    @property
    def class_map(self) -> ClassMap:
        """The class map: ``class_map.names[i]`` is class id i of the masks."""
        return self.engine.p.class_map

    def predict(self, image: np.ndarray | Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """The label mask and the class probabilities of one image.

        Args:
            image: an ``(H, W, 3)`` or ``(H, W, 4)`` uint8 array (RGB, alpha dropped), an
                ``(H, W)`` grey array (uint8, uint16 or float: stretched to 0..255 as
                predict stretches 16-bit and float files), or a PIL image (its EXIF
                orientation applied, as predict reads files).

        Returns:
            (labels ``(H, W)``: class ids, or bit sets for a multi-label model; probabilities
            ``(K, H, W)`` float32, K-1 channels for a multi-label model), at the image's size.

        Raises:
            SegtoolError: an image that is no picture (wrong shape or type, NaN pixels).
        """
        rgb = _as_rgb(image)
        probs = self.engine.probabilities([normalize(rgb, self.engine.p.normalization)])[0]
        labels = finish_labels(self.engine, probs, self.cut, self.rules)
        return labels, probs.float().cpu().numpy()


def _as_rgb(image: Any) -> np.ndarray:
    """An image as predict reads a file: ``(H, W, 3)`` uint8, through PIL's conversions."""
    import numpy as np
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        return rgb_array(ImageOps.exif_transpose(image), "image")
    if not isinstance(image, np.ndarray):
        raise SegtoolError(
            f"image: a {type(image).__name__}; pass a numpy array (H x W x 3 uint8, or "
            f"H x W) or a PIL image"
        )
    colour = image.ndim == 3 and image.shape[2] in (3, 4) and image.dtype == np.uint8
    if not (colour or image.ndim == 2):
        raise SegtoolError(
            f"image: an array of shape {image.shape} and type {image.dtype}; pass H x W x 3 "
            f"(or 4) uint8 RGB, or an H x W grey image"
        )
    if image.ndim == 2 and image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        image = image.astype(np.float64)
    if image.ndim == 2 and image.dtype == np.float64:
        image = image.astype(np.float32)  # PIL's float mode; stretched the same way
    return rgb_array(Image.fromarray(np.ascontiguousarray(image)), "image")


def load_model(
    model: Models,
    spec: PredictSpec | None = None,
    *,
    classes: Path | None = None,
    **options: Any,
) -> LoadedModel:
    """Load a run (or several: an ensemble) for predicting images in memory.

    Args:
        model: a run folder (a path or its text), a bare model folder (with `classes`), or
            several (their probabilities averaged).
        spec: how to predict (`PredictSpec`: tile, overlap, tta, threshold, device, amp,
            postprocess); or None, and keyword `options` build it.
        classes: the classes.json of a bare model folder.

    Returns:
        The model: ``labels, probs = model.predict(image)``.

    Raises:
        SegtoolError: no model, runs that cannot be ensembled, a run trained on volumes.
    """
    spec = PredictSpec.build(spec, **options)
    if isinstance(model, str):
        model = Path(model)
    elif not isinstance(model, Path) and isinstance(model, (list, tuple)):
        model = [Path(m) if isinstance(m, str) else m for m in model]
    return LoadedModel(model, spec, classes)
