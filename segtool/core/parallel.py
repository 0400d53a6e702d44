"""Spreading per-file work over worker processes, streaming results in order."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

#: ``on_progress(phase, done, total)``: how long-running functions report their progress.
ProgressFn = Callable[[str, int, int], None]

#: The most items one worker task carries (`chunk_sizes`).
MAX_CHUNK = 16

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _one_thread_per_worker() -> None:
    """Each worker process is one core's worth of work: OpenCV's own thread pool would only
    oversubscribe the machine (whether OpenCV is loaded already or later, in the worker)."""
    os.environ["OPENCV_FOR_THREADS_NUM"] = "1"
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


def chunk_sizes(n_items: int, jobs: int) -> list[int]:
    """Items per task, in order: a quarter of each worker's share of what is left (at most
    `MAX_CHUNK`), so tasks are few while much is left and shrink to single items at the end,
    where the workers then finish together."""
    sizes = []
    left = n_items
    while left:
        sizes.append(max(1, min(MAX_CHUNK, left // (jobs * 4))))
        left -= sizes[-1]
    return sizes


def _map_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(item) for item in chunk]


def _ready() -> None:
    """A first task that makes the pool start its processes now."""


#: The pools of this process that are running (see `stop_all`).
_RUNNING: set[Workers] = set()


def stop_all() -> None:
    """Stop every pool of worker processes this process runs, waiting for the tasks they are in.

    The output mechanism calls this before it removes a failed output's temporary files
    (after an error or Ctrl-C), so that no worker is still writing into them."""
    for workers in list(_RUNNING):
        if workers.owner == os.getpid():  # a forked worker holds a copy it does not own
            workers.close()


class Workers:
    """Worker processes for per-file work, started once there is enough work to pay for them,
    and early: `found` can be called while the caller is still finding its files, so the
    processes start (fork, initialise) while it finishes.

    Args:
        jobs: worker processes; None means every core, but none at all (the work runs in this
            process) for fewer than `min_items` items, where starting processes costs more
            than it saves. An explicit count is always honoured.
        min_items: see `jobs`.
    """

    def __init__(self, jobs: int | None, *, min_items: int = 0) -> None:
        self.jobs = jobs or default_jobs()
        self.min_items = 0 if jobs else min_items
        self._pool: ProcessPoolExecutor | None = None
        self.owner = os.getpid()

    def found(self, n: int) -> None:
        """`n` items are known so far: start the workers if that is enough to pay for them."""
        if self._pool is None and self.jobs > 1 and n >= self.min_items:
            # Forking a process that has started torch's thread pools can deadlock the
            # children, so once torch is loaded the workers start fresh ("spawn"); before
            # that, fork is fast.
            # multiprocessing is loaded here: a command that needs no workers skips it.
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            method = "spawn" if "torch" in sys.modules else "fork"
            context = multiprocessing.get_context(method)
            self._pool = ProcessPoolExecutor(self.jobs, context, initializer=_one_thread_per_worker)
            for _ in range(self.jobs):  # one each: "spawn" pools start processes as needed
                self._pool.submit(_ready)
            _RUNNING.add(self)

    def imap(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """`map(fn, items)` over the workers (in this process if none were worth starting), in
        order, with at most a few chunks of items per worker in flight, so memory does not grow
        with the input.

        Items travel in chunks (`chunk_sizes`): each task costs this process a submission, a
        wake-up and the pickling of `fn`, CPU time taken from the workers on a busy machine."""
        self.found(len(items))
        if self._pool is None:
            yield from map(fn, items)
            return
        window = self.jobs * 2
        pending: deque = deque()
        start = 0
        for size in chunk_sizes(len(items), self.jobs):
            pending.append(self._pool.submit(_map_chunk, fn, items[start : start + size]))
            start += size
            if len(pending) >= window:
                yield from pending.popleft().result()
        for future in pending:
            yield from future.result()

    def close(self) -> None:
        """Stop the workers (waiting for them), if any were started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            _RUNNING.discard(self)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def imap_jobs(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    """`map(fn, items)` over `jobs` processes (in this process when `jobs` is 1), in order.

    At most a few items per worker are in flight, so memory does not grow with the input.
    """
    with Workers(jobs) as workers:
        yield from workers.imap(fn, list(items))


def with_progress(
    items: Iterable[T], phase: str, total: int, on_progress: ProgressFn | None
) -> Iterator[T]:
    """Yield `items`, calling ``on_progress(phase, done, total)`` after each."""
    for done, item in enumerate(items, 1):
        if on_progress:
            on_progress(phase, done, total)
        yield item
