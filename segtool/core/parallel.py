"""Spreading per-file work over worker processes, streaming results in order."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

#: ``on_progress(phase, done, total)``: how long-running functions report their progress.
ProgressFn = Callable[[str, int, int], None]

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
    oversubscribe the machine."""
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


def imap_jobs(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    """`map(fn, items)` over `jobs` processes (in this process when `jobs` is 1), in order.

    At most a few items per worker are in flight, so memory does not grow with the input.
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    window = jobs * 4
    # Forking a process that has started torch's thread pools can deadlock the children, so
    # once torch is loaded the workers start fresh ("spawn"); before that, fork is fast.
    method = "spawn" if "torch" in sys.modules else "fork"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(jobs, context, initializer=_one_thread_per_worker) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        for future in pending:
            yield future.result()


def with_progress(
    items: Iterable[T], phase: str, total: int, on_progress: ProgressFn | None
) -> Iterator[T]:
    """Yield `items`, calling ``on_progress(phase, done, total)`` after each."""
    for done, item in enumerate(items, 1):
        if on_progress:
            on_progress(phase, done, total)
        yield item
