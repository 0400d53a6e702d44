"""A run's files written in the background while the next epoch trains.

At the end of an epoch the trainer hands `Saver.save` the model and the checkpoint's state;
the tensors are copied to the host there (a snapshot: the next steps cannot change what is
written), then one background thread writes the best model, ``last.pt``, metrics.csv and,
at most once a minute, curves.png. A save first waits for the one before, so the files are
written in epoch order and at most one write is in flight; `Saver.finish` waits for the last
and draws the curves a last time. Each file is written beside its place and swapped in, so
an interrupted write (Ctrl-C, a kill) leaves the last complete checkpoint where it was.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from segtool.train.checkpoint import save_checkpoint
from segtool.train.runfolder import RunFolder

#: curves.png is redrawn at most this often (seconds); metrics.csv after every epoch.
REDRAW_EVERY = 60.0


def to_host(value: Any) -> Any:
    """`value` with every tensor copied to a new, contiguous host tensor (dicts, lists and
    tuples followed), so later steps on the device cannot change it."""
    if isinstance(value, torch.Tensor):
        copied = torch.empty_like(value, device="cpu", memory_format=torch.contiguous_format)
        return copied.copy_(value.detach())
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_host(v) for v in value)
    return value


class Saver:
    """Writes a run's files in one background thread, one save at a time.

    Args:
        folder: the run folder.
        clock: seconds, for the curves' redraw interval (injected by tests).
        redraw_every: the least time between two drawings of curves.png.
    """

    def __init__(
        self,
        folder: RunFolder,
        clock: Callable[[], float] = time.monotonic,
        redraw_every: float = REDRAW_EVERY,
    ) -> None:
        self.folder, self.clock, self.redraw_every = folder, clock, redraw_every
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._twin: nn.Module | None = None  # a host copy of the model, for the best model
        self._drawn_at: float | None = None
        self._rows: list[dict[str, Any]] = []
        self._drawn_rows = 0

    def save(
        self, model: nn.Module, state: dict[str, Any], rows: list[dict[str, Any]], best: bool
    ) -> None:
        """Snapshot `state` (``last.pt``'s content) and, when `best`, the model's weights,
        then write them, metrics.csv and (when due) curves.png in the background.

        Raises:
            OSError: the previous save failed (a full disk, ...).
        """
        self.wait()
        weights = to_host(model.state_dict()) if best else None
        if best and self._twin is None:
            self._twin = copy.deepcopy(model).to("cpu")
        state, self._rows = to_host(state), [dict(r) for r in rows]
        now = self.clock()
        draw = self._drawn_at is None or now - self._drawn_at >= self.redraw_every
        if draw:
            self._drawn_at, self._drawn_rows = now, len(self._rows)
        self._start(lambda: self._write(weights, state, self._rows, draw))

    def _write(
        self, weights: dict | None, state: dict[str, Any], rows: list[dict], draw: bool
    ) -> None:
        if weights is not None and self._twin is not None:
            self._twin.load_state_dict(weights)
            self.folder.save_best(self._twin)
        save_checkpoint(self.folder.last_checkpoint, state)
        self.folder.write_progress(rows, draw=draw)

    def _start(self, job: Callable[[], None]) -> None:
        def run() -> None:
            try:
                job()
            except BaseException as exc:  # re-raised in the main thread by `wait`
                self._error = exc

        self._thread = threading.Thread(target=run, name="segtool-save")
        self._thread.start()

    def wait(self) -> None:
        """Wait for the save in flight.

        Raises:
            BaseException: what that save raised.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def finish(self) -> None:
        """Wait for the last save, then draw curves.png with every epoch if it lags."""
        self.wait()
        if self._rows and self._drawn_rows < len(self._rows):
            self.folder.write_progress(self._rows, draw=True)
            self._drawn_rows = len(self._rows)
