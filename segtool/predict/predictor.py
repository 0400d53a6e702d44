"""A trained model loaded with what predicting needs to know about its training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segtool.core.classes import ClassMap, out_channels, read_classes_json
from segtool.core.errors import SegtoolError
from segtool.core.postprocess import Rule
from segtool.train.model import has_model, load_model, model_classes
from segtool.train.runfolder import RunFolder


@dataclass
class Predictor:
    """A loaded model with what predicting needs to know about its training."""

    #: the forward function, model input -> logits: the torch module, or an exported model
    #: (a TorchScript module, or an onnxruntime session in `predict.exported.OrtForward`)
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]
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
    #: the run folder it came from (None for a bare model folder)
    run: RunFolder | None = None
    #: the post-processing chosen on the validation split (``postprocess.json``), by class
    #: name; None when none was chosen
    postprocess: dict[str, Rule] | None = None


def load_predictor(path: Path, classes: Path | None = None) -> Predictor:
    """Load a run folder (``model/`` and the run's records, read through `RunFolder`) or a
    bare segmentation-models-pytorch ``save_pretrained`` folder plus a ``classes.json``.

    Raises:
        SegtoolError: no model, no class map, or a class count that does not match the model.
    """
    run: RunFolder | None = RunFolder(path)
    if has_model(run.model_dir):
        folder = run.model_dir
    elif has_model(path, weights=True):
        folder, run = path, None
    else:
        raise SegtoolError(
            f"{path}: no model here; pass a run folder written by segtool train (with model/) "
            f"or a save_pretrained folder"
        )
    if classes is None and run is not None and run.classes_file.is_file():
        classes = run.classes_file
    if classes is None:
        raise SegtoolError(f"{path}: a bare model needs --classes classes.json to name its classes")
    class_map = read_classes_json(classes)
    channels = model_classes(folder)
    wanted = out_channels(class_map.num_classes, class_map.multilabel)
    if channels is not None and channels != wanted:
        raise SegtoolError(
            f"{classes}: {class_map.num_classes} classes need a model with "
            f"{wanted} output channel(s), but {folder} has {channels}; "
            f"pass the classes.json the model was trained with"
        )
    config = run.config() if run is not None else None
    split = run.split() if run is not None and run.document else None
    thresholds = run.thresholds(class_map) if run is not None else None
    postprocess = run.postprocess(class_map) if run is not None else None
    model = load_model(folder)
    model.eval()
    inputs = [("the model", folder), ("the class map", classes)]
    if run is not None:
        inputs += [(f"the run's {f.name}", f) for f in (run.config_file, run.split_file)]
    return Predictor(
        model,
        class_map,
        config.normalize if config else "imagenet",
        config.size if config else None,
        config.resize if config else "stretch",
        path,
        split,
        thresholds,
        inputs,
        run,
        postprocess,
    )
