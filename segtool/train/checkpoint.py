"""``checkpoints/last.pt``: everything needed to continue a run, loadable without running code.

Only tensors, numbers, strings, lists and dicts go in, so ``torch.load(weights_only=True)``
reads it: a checkpoint file cannot execute anything.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtool.core.errors import SegtoolError
from segtool.core.files import atomic_path


def rng_state() -> dict[str, Any]:
    """The random states of Python, numpy and torch (CPU and CUDA), as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


#: What every checkpoint holds; --resume needs all of it.
CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "best_dice",
    "best_epoch",
    "bad_epochs",
    "best_per_class",
    "class_names",
    "config",
    "rng",
)


def run_state(
    learner: Any,
    progress: Any,
    class_names: list[str] | tuple[str, ...],
    config: dict[str, Any],
    epoch: int,
    within: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What last.pt holds after `epoch` complete epochs: the `Learner`'s states, the
    `Progress` counters, the class names, the config and the random states; with `within`,
    the steps of the next epoch done too (its tally: steps, loss sum, images, rate), so that
    --resume continues from that step."""
    state = {
        "model": learner.model.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "scaler": learner.scaler.state_dict(),
        "epoch": epoch,
        "best_dice": progress.best_dice,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
        "best_per_class": progress.best_per_class,
        "class_names": list(class_names),
        "config": config,
        "rng": rng_state(),
    }
    if within is not None:
        state["within"] = within
    return state


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through a Python file handle, so a full disk raises an OSError; torch's zip writer then
    # fails to close and raises an opaque RuntimeError over it, which is unwrapped here.
    try:
        with atomic_path(path) as tmp, open(tmp, "xb") as handle:
            torch.save(state, handle)
    except RuntimeError as exc:
        cause = exc.__context__
        if not isinstance(cause, OSError):
            raise
        if cause.filename is None:
            cause.filename = str(path)
        raise cause from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        SegtoolError: no file, or a file that is not a segtool checkpoint.
    """
    if not path.is_file():
        raise SegtoolError(
            f"{path}: no checkpoint (the run stopped before it saved its first checkpoint); start "
            f"it again with --overwrite"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegtoolError(
            f"{path}: not a readable segtool checkpoint ({first[:200]}); start the run again "
            f"with --overwrite"
        ) from exc
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise SegtoolError(
            f"{path}: not a complete segtool checkpoint (no {', '.join(missing)}); start the run "
            f"again with --overwrite"
        )
    return state
