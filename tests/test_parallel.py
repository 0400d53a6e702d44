"""Worker processes: started only when the work pays for them, early, and results in order."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from segtool.core import parallel
from segtool.core.parallel import Workers, imap_jobs


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_default_jobs_run_a_small_folder_in_this_process(monkeypatch):
    monkeypatch.setattr(parallel, "default_jobs", lambda: 2)
    with Workers(None, min_items=5) as workers:
        out = list(workers.imap(_pid_and_square, [1, 2, 3, 4]))
    assert out == [(os.getpid(), x * x) for x in (1, 2, 3, 4)]


def test_default_jobs_use_workers_for_a_large_folder(monkeypatch):
    monkeypatch.setattr(parallel, "default_jobs", lambda: 2)
    items = list(range(12))
    with Workers(None, min_items=5) as workers:
        out = list(workers.imap(_pid_and_square, items))
    assert [square for _, square in out] == [x * x for x in items]  # in order
    assert os.getpid() not in {pid for pid, _ in out}


def test_an_explicit_job_count_is_honoured_even_for_one_item():
    with Workers(2, min_items=100) as workers:
        ((pid, square),) = workers.imap(_pid_and_square, [3])
    assert pid != os.getpid() and square == 9


def test_workers_start_as_soon_as_enough_items_are_found(monkeypatch):
    monkeypatch.setattr(parallel, "default_jobs", lambda: 2)
    workers = Workers(None, min_items=3)
    try:
        workers.found(2)
        assert not multiprocessing.active_children()
        workers.found(3)  # still discovering: the processes start now
        assert multiprocessing.active_children()
    finally:
        workers.close()
    assert not multiprocessing.active_children()


def test_imap_jobs_keeps_its_contract():
    assert [s for _, s in imap_jobs(_pid_and_square, range(5), 1)] == [0, 1, 4, 9, 16]
    assert [s for _, s in imap_jobs(_pid_and_square, range(5), 2)] == [0, 1, 4, 9, 16]


def test_items_travel_in_chunks_and_come_back_in_order():
    items = list(range(301))
    with Workers(2) as workers:
        workers.found(len(items))
        submit, chunks = workers._pool.submit, []

        def counting(fn, *args):
            chunks.append(len(args[1]))
            return submit(fn, *args)

        workers._pool.submit = counting
        out = list(workers.imap(_pid_and_square, items))
    assert [square for _, square in out] == [x * x for x in items]
    assert chunks == parallel.chunk_sizes(len(items), 2)
    assert len(chunks) < len(items) // 4  # a task carries many items...
    assert chunks[-4:] == [1, 1, 1, 1]  # ...but the last ones one each


def test_chunks_cover_every_item_largest_first():
    for n in (0, 1, 2, 15, 16, 17, 200, 10_000):
        for jobs in (1, 2, 16):
            sizes = parallel.chunk_sizes(n, jobs)
            assert sum(sizes) == n
            assert all(1 <= s <= parallel.MAX_CHUNK for s in sizes)
            assert sizes == sorted(sizes, reverse=True)


def _write_for_a_while(job: tuple) -> int:
    """Keep writing small files into a folder for about 0.1 s (a worker busy with its chunk)."""
    import time
    from pathlib import Path

    folder, i = job
    for j in range(40):
        Path(folder).mkdir(parents=True, exist_ok=True)  # as a writer of nested outputs does
        (Path(folder) / f"{i}_{j}").write_bytes(b"x" * 1000)
        time.sleep(0.0025)
    return i


def test_a_failed_output_stops_its_workers_before_removing_their_files(tmp_path):
    # After an error or Ctrl-C, the temporary output is removed; workers still writing into it
    # would race the removal and leave files (or the folder) behind.
    import time

    import pytest

    from segtool.core.files import output_folder

    with (
        pytest.raises(RuntimeError, match="boom"),
        Workers(2) as workers,
        output_folder(tmp_path / "out", False) as tmp,
    ):
        jobs = [(str(tmp / "images"), i) for i in range(8)]
        results = workers.imap(_write_for_a_while, jobs)
        next(results)  # the workers are busy writing the next items
        raise RuntimeError("boom")
    time.sleep(0.3)  # anything a worker were still doing would have landed by now
    assert list(tmp_path.iterdir()) == []
    assert not parallel._RUNNING


@pytest.mark.parametrize(
    ("loaded", "method"), [((), "fork"), (("cv2",), "spawn"), (("torch",), "spawn")]
)
def test_workers_are_forked_only_before_a_library_with_threads_is_loaded(
    loaded, method, monkeypatch
):
    """A child forked while torch's or OpenCV's thread pool holds a lock hangs in its first
    call into that library (seen: `cv2.setNumThreads` in a forked evaluate worker)."""
    for name in ("torch", "cv2"):
        if name in loaded:
            monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or object())
        else:
            monkeypatch.delitem(sys.modules, name, raising=False)
    chosen = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda m=None: chosen.append(m) or real(m))
    with Workers(2) as workers:
        workers.found(4)
    assert chosen == [method]
