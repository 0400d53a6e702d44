"""``segtool export``: a run's model as ONNX or TorchScript, checked against the run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from segtool.cli.common import (
    Overwrite,
    finite,
    load_torch,
    note,
    path_argument,
    path_option,
    say,
    warn,
)
from segtool.core.constants import EXPORT_FORMATS, ONNX_OPSET
from segtool.export.spec import CHECK_COUNT, LABEL_TOLERANCE, LOGIT_TOLERANCE


def command(
    run: Annotated[Path, path_argument("RUN", "Run folder written by segtool train.")],
    out: Annotated[
        Path,
        path_argument("OUT", "Export folder to write: model.onnx (or model.pt) and segtool.json."),
    ],
    format: Annotated[
        Literal[EXPORT_FORMATS],
        typer.Option(
            "--format",
            help=f"onnx (opset {ONNX_OPSET}, for onnxruntime and other ONNX runtimes) or torchscript "
            "(traced; PyTorch has deprecated TorchScript).",
        ),
    ] = "onnx",
    check_images: Annotated[
        Path | None,
        path_option(
            help="Folder of images for the parity check [default: the run's val split].",
            metavar="DIR",
        ),
    ] = None,
    check_count: Annotated[
        int, typer.Option(min=1, metavar="N", help="Images the parity check predicts.")
    ] = CHECK_COUNT,
    tolerance: Annotated[
        float,
        typer.Option(
            parser=finite(0), metavar="X", help="Largest |logit difference| the check allows."
        ),
    ] = LOGIT_TOLERANCE,
    label_tolerance: Annotated[
        float,
        typer.Option(
            parser=finite(0, 1),
            metavar="F",
            help="Largest share of pixels whose label may differ (0.0001 = 0.01 %).",
        ),
    ] = LABEL_TOLERANCE,
    overwrite: Overwrite = False,
) -> None:
    """Export a run's model to ONNX or TorchScript, checked against the run on real images.

    OUT is a folder: the model (model.onnx or model.pt) and segtool.json, what a consumer
    needs beside it (classes, normalisation, input geometry, output mode and thresholds; an
    ONNX model carries the same in its metadata). The exported model predicts the check images
    as segtool predict does; above a tolerance nothing is written.

    example:
      segtool export run/ exported/
      segtool predict exported/ new_images/ masks/ --backend onnxruntime
    """
    load_torch()
    from segtool.export.folder import export_model

    report = export_model(
        run,
        out,
        fmt=format,
        check_images=check_images,
        check_count=check_count,
        tolerance=tolerance,
        label_tolerance=label_tolerance,
        overwrite=overwrite,
    )
    for message in report.notes:
        warn(message)
    p = report.parity
    kind = f"ONNX (opset {ONNX_OPSET})" if report.format == "onnx" else "TorchScript"
    say(f"exported {run} to {report.model_file} as {kind}; free axes: {', '.join(report.dynamic)}")
    say(
        f"parity on {p.images} images ({p.source}): max |logit difference| "
        f"{p.max_logit_diff:.3g} (tolerance {p.tolerance:g}); {p.differing} of {p.pixels} "
        f"pixels labelled differently ({p.differing_share:.4%}, tolerance "
        f"{p.label_tolerance:.4%})"
    )
    note(f"what a consumer needs: {out / 'segtool.json'}")
