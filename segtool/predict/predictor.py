"""A trained model loaded with what predicting needs to know about its training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from segtool.core.classes import ClassMap, out_channels, read_classes_json
from segtool.core.constants import CLASSES_FILE, SPLIT_FILE
from segtool.core.dataset import read_split
from segtool.core.errors import SegtoolError
from segtool.core.files import read_json
from segtool.train.geometry import parse_size
from segtool.train.model import load_model
from segtool.train.thresholds import THRESHOLDS_FILE, read_thresholds


@dataclass
class Predictor:
    """A loaded model with what predicting needs to know about its training."""

    model: nn.Module
    class_map: ClassMap
    normalization: str = "imagenet"
    size: tuple[int, int] | None = None  #: the (H, W) box images are resized into
    resize: str = "stretch"  #: how: stretched to the box, or aspect kept and padded
    source: Path = Path()
    split: dict | None = None
    #: Multi-label models: per-class thresholds tuned on the validation split, if the run has
    #: them (``thresholds.json``), by class name.
    thresholds: dict[str, float] | None = None
    #: what was read to load it (model folder, class map, run files), for the output checks
    inputs: list[tuple[str, Path]] = field(default_factory=list)


def _model_classes(folder: Path) -> int | None:
    try:
        return int(
            read_json(folder / "config.json", "model config.json", "re-save the model")["classes"]
        )
    except (SegtoolError, ValueError, KeyError, TypeError):
        return None


def load_predictor(path: Path, classes: Path | None = None) -> Predictor:
    """Load a run folder (``model/``, ``classes.json``, ``config.json``) or a bare
    segmentation-models-pytorch ``save_pretrained`` folder plus a ``classes.json``.

    Raises:
        SegtoolError: no model, no class map, or a class count that does not match the model.
    """
    if (path / "model" / "config.json").is_file():
        folder, run = path / "model", path
    elif (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        folder, run = path, None
    else:
        raise SegtoolError(
            f"{path}: no model here; pass a run folder written by segtool train (with model/) "
            f"or a save_pretrained folder"
        )
    if classes is None and run is not None and (run / CLASSES_FILE).is_file():
        classes = run / CLASSES_FILE
    if classes is None:
        raise SegtoolError(f"{path}: a bare model needs --classes classes.json to name its classes")
    class_map = read_classes_json(classes)
    channels = _model_classes(folder)
    wanted = out_channels(class_map.num_classes, class_map.multilabel)
    if channels is not None and channels != wanted:
        raise SegtoolError(
            f"{classes}: {class_map.num_classes} classes need a model with "
            f"{wanted} output channel(s), but {folder} has {channels}; "
            f"pass the classes.json the model was trained with"
        )
    options: dict[str, Any] = {}
    split = None
    if run is not None and (run / "config.json").is_file():
        doc = read_json(run / "config.json", "run config.json", "train the run again")
        options = doc.get("options", {}) if isinstance(doc, dict) else None
        if not isinstance(options, dict):
            raise SegtoolError(
                f'{run / "config.json"}: no "options" object; the run\'s config.json is '
                f"damaged; train again"
            )
        if (run / SPLIT_FILE).is_file():
            split = read_split(run / SPLIT_FILE)
    thresholds = None
    if run is not None and (run / THRESHOLDS_FILE).is_file():
        thresholds = read_thresholds(run / THRESHOLDS_FILE, class_map)
    model = load_model(folder)
    model.eval()
    inputs = [("the model", folder), ("the class map", classes)]
    if run is not None:
        inputs += [("the run's " + name, run / name) for name in ("config.json", SPLIT_FILE)]
    return Predictor(
        model,
        class_map,
        options.get("normalize", "imagenet"),
        parse_size(options.get("size")),
        options.get("resize", "stretch"),
        path,
        split,
        thresholds,
        inputs,
    )
