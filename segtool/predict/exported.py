"""An exported model (``segtool export``): its folder, its ``segtool.json`` and the model as a
predictor's forward function.

An export folder holds the model file (``model.onnx``, or ``model.pt`` for TorchScript) and
``segtool.json``, everything a consumer needs to feed it and read its output: the class map,
the normalisation, the input geometry, the output mode and thresholds. This module is the one
reader and writer of that document (`describe`, `read_export`); `load_exported` turns a folder
back into a `Predictor` whose forward function is the exported model, so that predict's one
engine (geometry, TTA, tiles, thresholds) runs it as it runs the torch module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtool import __version__
from segtool.core.classes import class_map_from_json, mode_for, out_channels
from segtool.core.constants import BACKENDS, BINARY, EXPORT_FORMATS, MULTILABEL, ONNX_OPSET
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.files import read_json
from segtool.core.postprocess import Rule
from segtool.predict.predictor import Predictor, load_predictor
from segtool.train.data import IMAGENET_MEAN, IMAGENET_STD
from segtool.train.geometry import STRIDE

#: The document beside the model file.
EXPORT_DOC = "segtool.json"
#: The model file of each export format.
MODEL_FILES = dict(zip(EXPORT_FORMATS, ("model.onnx", "model.pt"), strict=True))
#: The backend each export format runs on (one of `BACKENDS`).
RUNS_ON = {"onnx": "onnxruntime", "torchscript": "torch"}
#: The graph's input and output names.
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: The version of segtool.json's layout.
DOC_VERSION = 1


def _normalization(mode: str) -> dict[str, Any]:
    """How an RGB image's 0..255 values become the model's input."""
    if mode == "imagenet":
        return {
            "mode": "imagenet",
            "rule": "x = (pixel / 255 - mean) / std, per channel",
            "mean": [round(float(v), 6) for v in IMAGENET_MEAN],
            "std": [round(float(v), 6) for v in IMAGENET_STD],
        }
    return {
        "mode": mode,
        "rule": "per image and channel: x = (v - mean) / max(std, 1e-6), v = pixel / 255, "
        "mean and std over the image's own pixels (before padding)",
    }


def _output(predictor: Predictor) -> dict[str, Any]:
    """What the logits are and how they become a label mask."""
    cmap = predictor.class_map
    mode = mode_for(cmap.num_classes, cmap.multilabel)
    names = cmap.names[1:]
    if mode == MULTILABEL:
        tuned = bool(predictor.thresholds)
        cuts = {n: (predictor.thresholds[n] if tuned else 0.5) for n in names}  # type: ignore[index]
        rule = "channel c-1 = class c: bit c-1 of the mask is set where sigmoid > its threshold"
    elif mode == BINARY:
        tuned, cuts = False, {names[0]: 0.5}
        rule = "one channel: class 1 where sigmoid > the threshold, else 0"
    else:
        tuned, cuts = False, None
        rule = "channel k = class k: the label is the argmax over channels (softmax)"
    return {
        "name": OUTPUT_NAME,
        "layout": "NCHW",
        "channels": out_channels(cmap.num_classes, cmap.multilabel),
        "mode": mode,
        "activation": "softmax" if cuts is None else "sigmoid",
        "labels": rule,
        "thresholds": cuts,
        "thresholds_tuned": tuned,
    }


def describe(predictor: Predictor, fmt: str, dynamic: list[str]) -> dict[str, Any]:
    """The ``segtool.json`` document of `predictor` exported as `fmt`.

    Args:
        predictor: the loaded run.
        fmt: ``onnx`` or ``torchscript``.
        dynamic: the input's axes of free size (``batch``, ``height``, ``width``).
    """
    size = list(predictor.size) if predictor.size is not None else None
    box = None if "height" in dynamic or size is None else [-(-s // STRIDE) * STRIDE for s in size]
    return {
        "segtool_export": DOC_VERSION,
        "segtool_version": __version__,
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "opset": ONNX_OPSET if fmt == "onnx" else None,
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "channel_order": "RGB",
            "channels": 3,
            "dynamic_axes": dynamic,
            "fixed_height_width": box,
        },
        "normalization": _normalization(predictor.normalization),
        "geometry": {
            "size": size,
            "resize": predictor.resize,
            "rule": "size null: the whole image; else resized (bilinear) into size (stretch: to "
            "it; keep: aspect kept, fitting inside). Then padded at the bottom and right to a "
            f"multiple of {STRIDE} (imagenet: pixel value 0 before normalising; image: 0 after), "
            "the logits cropped back and resized (bilinear) to the image's size",
            "stride": STRIDE,
        },
        "output": _output(predictor),
        "classes": predictor.class_map.to_json(),
        "postprocess": _postprocess(predictor),
        "source": str(predictor.source),
    }


def _postprocess(predictor: Predictor) -> dict[str, Any] | None:
    """The run's post-processing chosen on the validation split, by class name (None: none);
    each rule as ``postprocess.json`` writes it, applied to the label mask after the cut."""
    rules = predictor.postprocess
    return {name: rule.to_json() for name, rule in rules.items()} if rules else None


def metadata_props(doc: dict[str, Any]) -> dict[str, str]:
    """The document as an ONNX model's metadata: each top-level key a string (JSON for
    anything but text), and the whole document under ``segtool.json``."""
    import json

    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    props[EXPORT_DOC] = json.dumps(doc)
    return props


def is_export(folder: Path) -> bool:
    """Whether `folder` is an export folder (holds ``segtool.json``)."""
    return (folder / EXPORT_DOC).is_file()


def read_export(folder: Path) -> dict[str, Any]:
    """The export's ``segtool.json``, its layout checked.

    Raises:
        SegtoolError: no such document, or not one segtool wrote.
    """
    path = folder / EXPORT_DOC
    fix = "export the run again (segtool export RUN OUT --overwrite)"
    doc = read_json(path, EXPORT_DOC, fix)
    keys = ("format", "model_file", "normalization", "geometry", "output", "classes", "input")
    if not isinstance(doc, dict) or doc.get("format") not in MODEL_FILES:
        raise SegtoolError(f"{path}: not a segtool export document (no known format); {fix}")
    missing = [k for k in keys if not isinstance(doc.get(k), dict | str)]
    if missing:
        raise SegtoolError(f"{path}: no {', '.join(missing)}; {fix}")
    return doc


class OrtForward:
    """An ONNX model in onnxruntime (CPU) as a forward function: tensors in, logits out on
    the input's device. It uses as many threads as PyTorch would (``OMP_NUM_THREADS``, else
    the cores), so that the two backends compare on equal terms."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no graph-optimiser chatter
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for damaged files
            raise SegtoolError(
                f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); export the "
                "run again (segtool export RUN OUT --overwrite)"
            ) from exc

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C, H, W)`` of the batch `x` ``(N, 3, H, W)``."""
        data = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: data})[0]).to(x.device)


def load_torchscript(path: Path) -> torch.nn.Module:
    """A TorchScript export, loaded (PyTorch's deprecation notices for TorchScript hidden)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise SegtoolError(
                f"{path}: not a loadable TorchScript model ({str(exc).splitlines()[0]}); export "
                "the run again (segtool export RUN OUT --format torchscript --overwrite)"
            ) from exc
    return model.eval()


def load_exported(folder: Path, backend: str) -> Predictor:
    """An export folder as a `Predictor` run on `backend` (the format's own: ONNX on
    ``onnxruntime``, TorchScript on ``torch``).

    Raises:
        SegtoolError: a damaged folder, or a format `backend` does not run.
    """
    doc = read_export(folder)
    fmt = doc["format"]
    if RUNS_ON[fmt] != backend:
        raise SegtoolError(
            f"{folder}: holds a {fmt} model, which runs on --backend {RUNS_ON[fmt]}, not "
            f"{backend}; pass --backend {RUNS_ON[fmt]}"
        )
    path = folder / MODEL_FILES[fmt]
    if not path.is_file():
        raise SegtoolError(
            f"{path}: missing; export the run again (segtool export ... --overwrite)"
        )
    model = OrtForward(path) if fmt == "onnx" else load_torchscript(path)
    output, geometry = doc["output"], doc["geometry"]
    class_map = class_map_from_json(doc["classes"], folder / EXPORT_DOC)
    size, rules = geometry.get("size"), doc.get("postprocess")
    try:
        postprocess = {n: Rule.from_json(r) for n, r in rules.items()} if rules else None
        unknown = sorted(set(postprocess or ()) - set(class_map.names[1:]))
        if unknown:
            raise SegtoolError(f"classes {unknown} are not in its class map")
    except (SegtoolError, AttributeError) as exc:
        raise SegtoolError(f"{folder / EXPORT_DOC}: postprocess: {exc}; export again") from exc
    return Predictor(
        model=model,
        class_map=class_map,
        normalization=doc["normalization"].get("mode", "imagenet"),
        size=tuple(size) if size else None,
        resize=geometry.get("resize", "stretch"),
        source=folder,
        thresholds=output.get("thresholds") if output.get("thresholds_tuned") else None,
        inputs=[("the exported model", path), (f"the export's {EXPORT_DOC}", folder / EXPORT_DOC)],
        postprocess=postprocess,
    )


def load_for_backend(path: Path, classes: Path | None, backend: str) -> Predictor:
    """What predict runs: an export folder on `backend`, or a run (or bare model folder) on
    ``torch``.

    Raises:
        SegtoolError: an unknown backend, ``onnxruntime`` for a folder that holds no export, or
            what loading the run or the export refuses.
    """
    check_choice("backend", backend, BACKENDS)
    if is_export(path):
        if classes is not None:
            raise SegtoolError(
                f"--classes {classes}: the export {path} carries its own class map; drop --classes"
            )
        return load_exported(path, backend)
    if backend != "torch":
        raise SegtoolError(
            f"{path}: no exported model here (no {EXPORT_DOC}); --backend {backend} runs an "
            f"export folder: segtool export {path} EXPORT, then segtool predict EXPORT IMAGES "
            f"OUT --backend {backend}"
        )
    return load_predictor(path, classes)
