"""predict's writers: at most `IN_FLIGHT` batches of outputs wait for a slow disk (a stand-in
pool that writes a batch only when its result is asked for counts them); worker processes
write the very files threads write; a worker's full disk is one line naming the file in OUT,
and OUT is not left half-written; the rule that picks processes."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import numpy as np
import pytest

import segtool.predict.folder as folder_module
import segtool.predict.writing as writing
from segtool.core.parallel import Workers
from segtool.predict.folder import predict_dir
from segtool.predict.writing import IN_FLIGHT, Outputs, Writer, use_processes
from tests.cli import invoke
from tests.test_predict_labels import _masks, folder  # noqa: F401  (the fixture's models)


class SlowDisk:
    """A pool whose tasks run only when their result is asked for, as on a disk that never
    keeps up: what is submitted and not yet asked for is what waits in memory."""

    def __init__(self, max_workers: int) -> None:
        self.waiting: set[int] = set()
        self.most = 0

    def submit(self, fn, *args):
        pool, key = self, len(self.waiting) + self.most * 1000 + id(args)

        class Deferred:
            def result(self):
                pool.waiting.discard(key)
                return fn(*args)

            def cancel(self):
                pool.waiting.discard(key)

        self.waiting.add(key)
        self.most = max(self.most, len(self.waiting))
        return Deferred()

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_slow_disk_holds_the_model_back_at_a_few_batches(folder, tmp_path, monkeypatch):  # noqa: F811
    pools = []
    monkeypatch.setattr(writing, "ThreadPoolExecutor", lambda max_workers: pools.append(SlowDisk(max_workers)) or pools[-1])  # fmt: skip
    options = {"device": "cpu", "workers": 0, "batch_size": 1, "overlay_images": True}
    report = predict_dir(folder / "multi", folder / "images", tmp_path / "out", **options)
    assert report.n_images == 11 > IN_FLIGHT
    assert pools[0].most == IN_FLIGHT  # the model waited for the oldest batch, never more
    assert len(_masks(tmp_path / "out")) == 11 and not pools[0].waiting
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 11


def test_processes_write_what_threads_write(folder, tmp_path, monkeypatch):  # noqa: F811
    options = {"device": "cpu", "workers": 0, "batch_size": 4, "overlay_images": True,
               "probabilities": True}  # fmt: skip
    predict_dir(folder / "binary", folder / "images", tmp_path / "threads", **options)
    writers = []

    def in_processes(outputs, device, sink):
        writers.append(Writer(outputs, 2, processes=True))
        return writers[-1]

    monkeypatch.setattr(folder_module, "writer_for", in_processes)
    predict_dir(folder / "binary", folder / "images", tmp_path / "processes", **options)
    assert isinstance(writers[0].pool, Workers)
    threads, processes = tmp_path / "threads", tmp_path / "processes"
    assert _masks(processes) == _masks(threads) and len(_masks(threads)) == 11
    for name in ("overlays",):
        ours = sorted(p.read_bytes() for p in (processes / name).iterdir())
        assert ours == sorted(p.read_bytes() for p in (threads / name).iterdir())
    for npz in threads.glob("*.npz"):
        np.testing.assert_array_equal(np.load(npz)["probs"], np.load(processes / npz.name)["probs"])


@dataclass(frozen=True)
class FullDisk(Outputs):
    """Outputs whose disk fills up when one image's mask is written (in the worker)."""

    full_at: str = ""

    def save(self, item):
        if item[0].stem == self.full_at:
            path = self.folder / f"{item[0].stem}.png"
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        super().save(item)


def test_a_full_disk_in_a_worker_is_one_line_and_nothing_half_written(
    folder,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    out = tmp_path / "out"
    monkeypatch.setattr(folder_module, "Outputs", lambda *args: FullDisk(*args, full_at="im05"))
    monkeypatch.setattr(folder_module, "writer_for",
                        lambda outputs, device, sink: Writer(outputs, 2, processes=True))  # fmt: skip
    result = invoke(["predict", folder / "multi", folder / "images", out, "--device", "cpu",
                     "--batch-size", "2", "--overlay"])  # fmt: skip
    assert result.exit_code == 1 and result.exception is None, result.output
    assert f"{out / 'im05.png'}: the disk is full" in result.output
    assert "Traceback" not in result.output
    # one error line (a log may also have the phase's "predicting 11 images" line before it)
    assert [line for line in result.stderr.splitlines() if not line.startswith("predicting")] == [
        f"error: {out / 'im05.png'}: the disk is full; nothing was replaced; free space and run again"
    ]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_processes_where_they_were_measured_to_pay():
    assert not use_processes(2, annotations=False)  # measured: threads win on 2 cores
    assert use_processes(writing.PROCESS_CORES, annotations=False)
    assert not use_processes(64, annotations=True)  # annotations are gathered here
    with pytest.raises(ValueError, match="threads"):
        Writer(Outputs(folder_module.Path("."), None), 2, processes=True, annotations=object())  # type: ignore[arg-type]


def test_workers_submit_without_processes_runs_here():
    workers = Workers(1)
    assert workers.submit(divmod, 7, 2).result() == (3, 1)
    with pytest.raises(ZeroDivisionError):
        workers.submit(divmod, 1, 0).result()
