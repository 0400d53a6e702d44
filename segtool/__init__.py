"""segtool: polygon annotations to a trained segmentation model and an honest score.

The commands' functions, usable from Python::

    from segtool import rasterize_dir, split_dataset, fit, predict_dir, evaluate_dirs

and the in-memory predictor::

    from segtool import load_model
    labels, probs = load_model("run").predict(image)

They are imported on first use, so ``import segtool`` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "rasterize_dir": "segtool.rasterize.folder",
    "split_dataset": "segtool.split.assign",
    "fit": "segtool.train.loop",
    "predict_dir": "segtool.predict.folder",
    "evaluate_dirs": "segtool.evaluate.report",
    "evaluate_model": "segtool.evaluate.model",
    "load_model": "segtool.predict.loaded",
    "choose_postprocessing": "segtool.evaluate.postprocess",
    "export_model": "segtool.export.folder",
    "EvalSpec": "segtool.evaluate.spec",
    # The typed specs and the run folder the functions take and write.
    "TrainConfig": "segtool.train.config",
    "PredictSpec": "segtool.predict.spec",
    "RunFolder": "segtool.train.runfolder",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'segtool' has no attribute {name!r}")
