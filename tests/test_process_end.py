"""A command run as the process ends the process as soon as it is done (`end_now`): its exit
code kept, the exit handlers run, the output flushed, the interpreter's teardown skipped; and
the ordinary exit where a running thread still has work that exit waits for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The process: an object whose finaliser runs only in the interpreter's teardown, an exit
#: handler, optionally a thread the ordinary exit waits for, then segtool's entry point.
SCRIPT = """
import atexit, sys, threading

class TornDown:
    def __del__(self):
        sys.stderr.write("torn down\\n")

kept = TornDown()
atexit.register(lambda: sys.stderr.write("exit handlers ran\\n"))
if {thread}:
    def after_main():
        threading.main_thread().join()  # ends only in the ordinary exit's shutdown
        sys.stderr.write("thread finished\\n")
    threading.Thread(target=after_main).start()
sys.argv = ["segtool", *sys.argv[1:]]
from segtool.cli.app import main
main()
"""


def _run(*args: str, thread: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(thread=thread), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code"), [(["--version"], 0), (["split", "no/such/dataset"], 1)], ids=["done", "error"]
)
def test_a_finished_command_ends_the_process_without_teardown(args, code):
    done = _run(*args)
    assert done.returncode == code
    assert "exit handlers ran" in done.stderr
    assert "torn down" not in done.stderr
    if code:  # the error line was flushed before the process ended
        assert "no/such/dataset" in done.stderr
    else:
        assert done.stdout.strip()  # the version


def test_a_thread_still_running_gets_the_ordinary_exit():
    done = _run("--version", thread=True)
    assert done.returncode == 0
    assert "thread finished" in done.stderr
    assert "exit handlers ran" in done.stderr
