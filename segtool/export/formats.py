"""Writing the model file: ONNX through PyTorch's exporter (``torch.onnx.export`` on
``torch.export``), TorchScript by tracing. No graph is written by hand."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from segtool.core.constants import ONNX_OPSET
from segtool.core.errors import SegtoolError
from segtool.predict.exported import EXPORT_DOC, INPUT_NAME, OUTPUT_NAME

#: The input's axes, as the ONNX graph names them.
ALL_AXES = ["batch", "height", "width"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PyTorch's exporter logs every failed attempt and warns about TorchScript's deprecation;
    segtool reports the outcome in one line instead."""
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _export(model: torch.nn.Module, sample: torch.Tensor, axes: list[str]) -> Any:
    dims = {0: "batch", 2: "height", 3: "width"}
    shapes = ({i: torch.export.Dim(name) for i, name in dims.items() if name in axes},)
    with _quiet():
        return torch.onnx.export(
            model,
            (sample,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamic_shapes=shapes,
            dynamo=True,
            verbose=False,
        )


def to_onnx(model: torch.nn.Module, sample: torch.Tensor, fixed_ok: bool) -> tuple[Any, list[str]]:
    """The model as an ONNX graph (opset `ONNX_OPSET`) with a free batch, height and width; where
    the architecture cannot take a free height and width (PyTorch's exporter refuses), a free
    batch at the sample's height and width, if `fixed_ok` (a run that stretches every image
    to its --size, so that each input is that size).

    Returns:
        The ``onnx.ModelProto`` (optimised) and its free axes.

    Raises:
        SegtoolError: the exporter refuses the model (the first line of its reason, and what
            to do).
    """
    try:
        program, axes = _export(model, sample, ALL_AXES), ALL_AXES
    except Exception as free:  # the exporter raises many types; each ends here as one line
        reason = str(free).strip().splitlines()[0] if str(free).strip() else type(free).__name__
        if not fixed_ok:
            raise SegtoolError(
                f"PyTorch's ONNX exporter cannot give this model a free height and width "
                f"({reason}); a run trained with --size and --resize stretch exports at that "
                f"size, or use --format torchscript"
            ) from free
        try:
            program, axes = _export(model, sample, ["batch"]), ["batch"]
        except Exception as fixed:
            raise SegtoolError(
                f"PyTorch's ONNX exporter cannot export this model "
                f"({str(fixed).strip().splitlines()[0]}); use --format torchscript"
            ) from fixed
    with _quiet():
        program.optimize()
    return program.model_proto, axes


def save_onnx(proto: Any, path: Path, props: dict[str, str]) -> None:
    """Write the graph with `props` as its ``metadata_props``."""
    import onnx

    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


def to_torchscript(model: torch.nn.Module, sample: torch.Tensor, path: Path, doc: str) -> None:
    """Trace the model on `sample` and save it with ``segtool.json`` (`doc`) as an extra file
    (``torch.jit.load(path, _extra_files={"segtool.json": ""})`` reads it back).

    Raises:
        SegtoolError: the model cannot be traced.
    """
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, sample, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={EXPORT_DOC: doc})
    except (RuntimeError, TypeError) as exc:
        raise SegtoolError(
            f"PyTorch cannot trace this model to TorchScript ({str(exc).splitlines()[0]}); "
            "use --format onnx"
        ) from exc
