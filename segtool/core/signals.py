"""Ending a command on SIGTERM and SIGHUP as on Ctrl-C, and worker processes that never
outlive the command.

`install` (called once by the command line) makes SIGTERM (``docker stop``, Slurm, systemd,
``kill``) and SIGHUP (a closed terminal or SSH session) raise `Terminated`, a
`KeyboardInterrupt`: every path that cleans up after Ctrl-C (workers stopped, temporaries
removed, a training run saved resumable) runs for them too. Once the command has cleaned up,
the process ends by that same signal, so the shell reports 143 (SIGTERM) or 129 (SIGHUP) and a
supervisor sees the stop it asked for; Ctrl-C stays exit code 130.

Worker processes (`for_worker`) leave SIGINT and SIGHUP to the command that started them (which
stops them), end on SIGTERM, and are killed by the kernel if that command dies without
stopping them (Linux's parent-death signal), so none outlives it.

A command that is done ends its process at once (`end_now`): the exit handlers run, the output
is flushed, and the interpreter's teardown (freeing every module and tensor one by one: over a
second after a training run on a quiet machine, tens of seconds under ``nice`` beside other
work) is skipped, so a ``--time-budget`` holds to the moment the shell gets its prompt back.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

#: The signals that end a command as Ctrl-C does.
ENDING = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1

#: The ending signals received so far (the first one ends the command).
_received: list[int] = []
_installed: list[bool] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: the command stops as after Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handle(signum: int, frame: object) -> None:
    """The first ending signal interrupts the command; later ones (a supervisor repeating its
    request) must not interrupt the clean-up it started."""
    _received.append(signum)
    if len(_received) == 1:
        raise Terminated(signum)


def install() -> None:
    """Make SIGTERM and SIGHUP end the command as Ctrl-C does (then end the process by that
    signal). Does nothing outside the main thread, where Python cannot set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in ENDING:
        signal.signal(signum, _handle)
    if not _installed:
        _installed.append(True)
        atexit.register(_end_by_signal)  # registered first, so it runs after every other


def received() -> int | None:
    """The ending signal that stopped this command, if one did."""
    return _received[0] if _received else None


def _end_by_signal() -> None:
    """At exit, after all clean-up: end the process by the signal that stopped it."""
    signum = received()
    if signum is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)


def end_now(code: object) -> None:
    """End the process with exit `code` (a command's, from its ``SystemExit``) now that the
    command is done: the exit handlers run (an ending signal is re-raised by one of them),
    both streams are flushed, and the process exits without the interpreter's teardown.

    Returns, leaving the ordinary exit to the caller, where that exit still has work to wait
    for (a thread that is not a daemon is running) or `code` is not a number (Python prints
    it).
    """
    if code is not None and not isinstance(code, int):
        return
    others = (t for t in threading.enumerate() if t is not threading.main_thread())
    if any(thread.is_alive() and not thread.daemon for thread in others):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done (a swap is never cut in half);
    they are handled as soon as it ends.

    They are held where Python runs its handlers, not by the thread's signal mask: the kernel
    gives a signal sent to the process to any thread that does not block it (a pool's manager
    thread, an encoder thread), and Python then runs the handler in the main thread whatever
    that thread's mask, so a mask would hold nothing once a command runs threads. Nested
    blocks hold until the outermost one ends."""
    if threading.current_thread() is not threading.main_thread() or _holding:
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    # A handler installed outside Python (None) is left as it is.
    ours = [s for s in (signal.SIGINT, *ENDING) if signal.getsignal(s) is not None]
    previous = {signum: signal.signal(signum, hold) for signum in ours}
    _holding.append(True)
    try:
        yield
    finally:
        _holding.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:  # handled now, by the handler the command had
            signal.raise_signal(held[0])


#: Set while `deferred_signals` holds signals (an inner block adds nothing).
_holding: list[bool] = []


@contextlib.contextmanager
def blocked_for_children() -> Iterator[None]:
    """Block Ctrl-C, SIGTERM and SIGHUP in this thread while it starts worker processes.

    A child inherits the mask (through exec too) and unblocks them once it has set its own
    handlers (`for_worker`): a signal that reaches a child while it starts then ends it as a
    worker should end, never through a copy of the parent's handler, which raised in the
    child's start-up ("Exception ignored in Random.seed ... Terminated"). The parent handles
    what came meanwhile as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *ENDING})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def for_worker(parent: int, die_with_parent: bool) -> None:
    """Set up a worker process: Ctrl-C and SIGHUP are its parent's to handle (the parent stops
    it), SIGTERM ends it at once, and with `die_with_parent` (its parent's thread that started
    it lives as long as the parent) the kernel kills it if the parent dies first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, *ENDING})  # `blocked_for_children`
    if die_with_parent and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
