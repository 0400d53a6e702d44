"""Pacing a run's steps: the time a step takes now, when the next checkpoint within the epoch
is due, and the epoch's batches from a given step on, each step asked for first.

A run saves ``last.pt`` every `SAVE_EVERY` seconds within an epoch as well as at its end, so
Ctrl-C, SIGTERM or a crash loses at most one interval, even in the first epoch; the epoch
resumes at the step saved. The trainer asks before every step (`Paced`) whether it fits the
time budget (`Budget.last_step`) and whether a checkpoint is due; numbers only here.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from segtool.train.epoch_length import VALIDATION_PER_STEP

#: Seconds between the checkpoints saved within an epoch (each costs about one save of
#: ``last.pt``: a second or less for the planned models).
SAVE_EVERY = 60.0
#: What the command does after its last epoch, in passes of an epoch's end (validation and
#: saving): it chooses the post-processing on the validation split (the best model loaded,
#: each image predicted, its mask written and read back, its components counted; a tuned
#: run's thresholds too), waits for the last save, moves the run folder into place and prints
#: the summary. The post-processing choice alone measured about 4 passes on a busy CPU (16
#: validation images); the rest is the save, the summary and part of the interpreter's exit.
ENDING_PASSES = 6
#: Steps whose mean is the current step time: enough to span the loss reads that wait for a
#: GPU (every `steps.SYNC_EVERY` steps), few enough to follow load arriving mid-run.
WINDOW = 10


class Pacer:
    """Step times and the checkpoint interval of one run, on the budget's clock.

    Args:
        clock: the budget's clock (``time.monotonic``; tests give their own).
        save_every: seconds between checkpoints within an epoch (default `SAVE_EVERY`).
    """

    def __init__(self, clock: Callable[[], float], save_every: float | None = None) -> None:
        self.clock = clock
        self.save_every = SAVE_EVERY if save_every is None else save_every
        self.times: deque[float] = deque(maxlen=WINDOW)
        self.last: float | None = None  #: the clock when the step before ended
        self.saved_at = clock()
        self.closing: float | None = None  #: seconds the last epoch's end took (validation,
        self.closing_step = 0.0  #: saving), and the step time then

    def mark(self) -> float:
        """Note that a step ended now (or that the steps start now); the time, read once."""
        now = self.clock()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now
        return now

    def restart(self) -> None:
        """The steps start afresh at another input size: the times so far, and the time since
        the last step (the new loaders' start-up), say nothing of the next."""
        self.times.clear()
        self.last = None

    def ended_epoch(self, since: float, validated: bool = True) -> None:
        """The epoch's steps ended at `since` and its end (validation, saving) now: measured
        when it validated (the run's last epoch always does), and the next step's time
        starts afresh."""
        if validated:
            self.closing, self.closing_step = self.clock() - since, self.step_time() or 0.0
        self.last = None

    def closing_time(self, step_time: float, val_batches: int) -> float:
        """Seconds an epoch's end will take at `step_time` a step: as the last one took,
        longer in proportion where steps slowed since; before any, guessed from the step
        (`VALIDATION_PER_STEP` a validation batch, a step's time to save)."""
        if self.closing is None:
            return step_time * (val_batches * VALIDATION_PER_STEP + 1)
        slower = step_time / self.closing_step if self.closing_step > 0 else 1.0
        return self.closing * max(slower, 1.0)

    def ending_time(
        self, step_time: float, val_batches: int, closing: float | None = None
    ) -> float:
        """Seconds the command takes after its last epoch's end: `ENDING_PASSES` of an
        epoch's end (`closing`, one just measured, else `closing_time`); the budget keeps
        them out of the epochs."""
        if closing is None:
            closing = self.closing_time(step_time, val_batches)
        return ENDING_PASSES * closing

    def step_time(self) -> float | None:
        """The mean of the last `WINDOW` steps, or the median of the last three when that is
        slower (load arriving is followed within two steps, one slow read of a GPU's queue
        is not; a lull only as the window moves on); None before the first."""
        if not self.times:
            return None
        recent = statistics.median(list(self.times)[-3:])
        return max(sum(self.times) / len(self.times), recent)

    def save_due(self, now: float) -> bool:
        """Whether `save_every` seconds have passed since the last checkpoint."""
        return now - self.saved_at >= self.save_every

    def saved(self) -> None:
        """A checkpoint was written now."""
        self.saved_at = self.clock()


class Paced:
    """An epoch's batches from step `start` on (the ones before are drawn and dropped: the
    order and augmentation of a resumed epoch are the uninterrupted one's), `ask(step)`
    called before each step, with the steps done in the epoch; it returns False to end the
    epoch there. Its length is the whole epoch's."""

    def __init__(self, loader: Any, start: int, ask: Callable[[int], bool]) -> None:
        self.loader, self.start, self.ask = loader, start, ask

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if i < self.start:
                continue
            if not self.ask(i):
                return
            yield batch
