"""Signals held during a swap: `deferred_signals` holds them even when the command runs threads
(the kernel hands a process's signal to any thread that does not block it)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from segtool.core import signals

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture
def wakeup():
    """A pipe the C-level signal handler writes to: reading it waits until the signal has
    arrived in this process, whichever thread the kernel gave it to."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    old = signal.set_wakeup_fd(write)
    try:
        yield read
    finally:
        signal.set_wakeup_fd(old)
        os.close(read)
        os.close(write)


def _arrived(fd: int) -> None:
    ready, _, _ = select.select([fd], [], [], 30)
    assert ready, "the signal never arrived"
    os.read(fd, 16)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sent_during_the_block_is_handled_after_it(signum, wakeup, monkeypatch):
    """Another thread is running (as a worker pool's manager thread is), so the kernel gives it
    the signal; the block still finishes before the command's handler runs."""
    monkeypatch.setattr(signals, "_received", [])
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, *signals.ENDING)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a loaded command
    signals.install()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals.deferred_signals():
                os.kill(os.getpid(), signum)
                _arrived(wakeup)
                for step in range(3):  # bytecode runs here: a pending handler would run too
                    steps.append(step)
            steps.append("after the block")  # the handler runs as the block ends
    finally:
        stop.set()
        other.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert steps == [0, 1, 2]


def test_nothing_held_leaves_the_handlers_as_they_were():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, *signals.ENDING)}
    with signals.deferred_signals(), signals.deferred_signals():
        pass
    assert {s: signal.getsignal(s) for s in before} == before


def test_ctrl_c_while_the_command_line_loads_ends_quietly_with_130():
    """Before `main` runs (typer, rich and the command's modules still loading), Ctrl-C gives
    status 130 and no traceback."""
    code = (
        "import os, signal, time\n"
        "import segtool.cli\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "import segtool.cli.app\n"  # what is still loading when the signal comes
        "time.sleep(30)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert (done.returncode, done.stderr) == (130, "")


def test_once_loaded_ctrl_c_interrupts_the_command_again():
    """After loading, Ctrl-C raises KeyboardInterrupt, which the command's clean-up catches."""
    code = (
        "import os, signal\n"
        "import segtool.cli\n"
        "segtool.cli.loaded()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    for _ in range(10**6): pass\n"
        "except KeyboardInterrupt:\n"
        "    print('cleaned up')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "cleaned up\n")


WORKERS = r"""
import os, sys
from segtool.core import parallel

def blocked():
    line = next(l for l in open("/proc/self/status") if l.startswith("SigBlk"))
    return int(line.split()[1], 16)

original = parallel.for_worker

def recording(parent, die_with_parent):
    with open(os.path.join(sys.argv[1], str(os.getpid())), "w") as fh:
        fh.write(str(blocked()))  # as the worker starts, before its own handlers
    original(parent, die_with_parent)

parallel.for_worker = recording

def task(item):
    return blocked()

with parallel.Workers(2) as workers:
    print(*set(workers.imap(task, list(range(8)))), blocked())
"""


def test_workers_start_with_the_ending_signals_blocked_and_unblock_them(tmp_path):
    """A worker forked while the parent has its own handlers must not run a copy of them: it
    starts with Ctrl-C, SIGTERM and SIGHUP blocked and unblocks them once its handlers are
    set; the parent's mask is as it was."""
    done = subprocess.run(
        [sys.executable, "-c", WORKERS, str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    bits = sum(1 << (s - 1) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    at_start = [int(p.read_text()) for p in tmp_path.iterdir()]
    assert len(at_start) == 2
    assert all(mask & bits == bits for mask in at_start)
    in_tasks, parent = done.stdout.split()
    assert int(in_tasks) & bits == 0
    assert int(parent) & bits == 0


LOADING_TORCH = r"""
import importlib.abc, os, signal, sys
from segtool.cli.common import load_torch
from segtool.core import signals

signals.install()

class SignalMidImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch.autograd":  # deep inside torch's own import
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalMidImport())
try:
    load_torch()
except KeyboardInterrupt:
    import torch
    print("interrupted once loaded:", torch.autograd.grad is not None, flush=True)
"""


def test_sigterm_while_torch_loads_waits_until_it_is_loaded():
    """A signal inside torch's import (where a C++ callback turned the handler's exception into
    an abort, exit -6) is handled once torch is loaded: the command is interrupted as usual."""
    done = subprocess.run(
        [sys.executable, "-c", LOADING_TORCH], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert done.stdout == "interrupted once loaded: True\n", done.stderr[-2000:]
    assert done.returncode == -signal.SIGTERM
