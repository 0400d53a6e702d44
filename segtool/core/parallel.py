"""Spreading per-file work over worker processes, streaming results in order."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from segtool.core.signals import blocked_for_children, for_worker

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

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


#: Fewer items than this run in this process where a command lets the count decide
#: (`jobs_for`): starting the workers costs more than a few hundred files' work.
MIN_WORKER_ITEMS = 256


def jobs_for(n_items: int) -> int:
    """Worker processes for `n_items` quick per-file tasks: every core, or none (1: this
    process) for fewer than `MIN_WORKER_ITEMS`."""
    return default_jobs() if n_items > MIN_WORKER_ITEMS else 1


def _start_worker(parent: int, die_with_parent: bool) -> None:
    """Each worker process is one core's worth of work: OpenCV's own thread pool would only
    oversubscribe the machine (whether OpenCV is loaded already or later, in the worker). It
    leaves Ctrl-C, SIGTERM and SIGHUP to its parent, and never outlives it (`for_worker`)."""
    for_worker(parent, die_with_parent)
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
    """End every pool of worker processes this process runs, now: their results are not
    wanted.

    The output mechanism calls this before it removes a failed output's temporary files
    (after an error, Ctrl-C or SIGTERM), so that no worker is still writing into them."""
    for workers in list(_RUNNING):
        if workers.owner == os.getpid():  # a forked worker holds a copy it does not own
            workers.close(now=True)


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

            # OpenCV's thread pool is no safer: a child forked while one of its threads holds
            # the pool's lock hangs in its first OpenCV call (`_start_worker`'s included).
            method = "spawn" if {"torch", "cv2"} & sys.modules.keys() else "fork"
            context = multiprocessing.get_context(method)
            # The kernel may kill a worker when its parent dies only if the thread that starts
            # it lives as long as the process (the parent-death signal follows the thread).
            main = threading.current_thread() is threading.main_thread()
            with blocked_for_children():  # a starting worker must not run our handlers
                self._pool = ProcessPoolExecutor(
                    self.jobs, context, initializer=_start_worker, initargs=(os.getpid(), main)
                )
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

    def submit(self, fn: Callable[..., R], *args: object) -> Future[R]:
        """``fn(*args)`` on a worker (starting them if none are yet), as a future: for work
        handed over as it comes, its caller bounding how much is in flight. Without workers
        (one job) it runs here, its result or error in the future."""
        self.found(self.min_items)
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        from concurrent.futures import Future

        done: Future[R] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # raised by the future's result(), as a worker's would be
            done.set_exception(exc)
        return done

    def close(self, *, now: bool = False) -> None:
        """Stop the workers, if any were started: after the tasks they are in, or (`now`)
        at once, ending their processes; either way they are gone when this returns."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if now:  # the pool has no public way to end its processes (before Python 3.14)
            for process in dict(getattr(pool, "_processes", None) or {}).values():
                with contextlib.suppress(OSError, ValueError):
                    process.terminate()
        pool.shutdown(cancel_futures=True)
        _RUNNING.discard(self)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(now=kind is not None)  # after an error or Ctrl-C, no result is wanted


def imap_jobs(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    """`map(fn, items)` over `jobs` processes (in this process when `jobs` is 1), in order.

    At most a few items per worker are in flight, so memory does not grow with the input.
    """
    with Workers(jobs) as workers:
        yield from workers.imap(fn, list(items))


def read_ahead(items: Sequence[T], read: Callable[[T], R]) -> Iterator[R]:
    """``read(item)`` for each item, in order, each next item's read started in a background
    thread as the one before is handed over: it runs while the caller works on that one
    (a case's decoding while the model predicts the case before). One read ahead at most, so
    memory holds two items. An error reading an item is raised when the caller reaches it."""
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="segtool-read-ahead")
    try:
        ahead = pool.submit(read, items[0])
        for following in range(1, len(items) + 1):
            current = ahead.result()
            if following < len(items):
                ahead = pool.submit(read, items[following])
            yield current
    finally:  # a caller that stops early (an error, Ctrl-C) does not wait for more reads
        pool.shutdown(wait=True, cancel_futures=True)


def with_progress(
    items: Iterable[T], phase: str, total: int, on_progress: ProgressFn | None
) -> Iterator[T]:
    """Yield `items`, calling ``on_progress(phase, done, total)`` as they start (done 0: a
    log gets its line before the first item is done) and after each."""
    if on_progress:
        on_progress(phase, 0, total)
    for done, item in enumerate(items, 1):
        if on_progress:
            on_progress(phase, done, total)
        yield item
