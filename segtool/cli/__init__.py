"""The command line: one module per command, each a thin layer over one library function.

Ctrl-C while the command line is still loading (before `segtool.cli.app.main` installs the
command's handlers) ends segtool quietly with status 130, as it does later: nothing has been
read or written yet, and Python's own handler would print a traceback of the imports.
"""

import signal
import threading


def _interrupted_while_loading(signum: int, frame: object) -> None:
    raise SystemExit(130)


if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _interrupted_while_loading)


def loaded() -> None:
    """The command line is loaded: Ctrl-C interrupts the command (KeyboardInterrupt), whose
    clean-up the command's error boundary runs."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)
