"""The exceptions segtool raises for problems a user can fix, and the check of a choice."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from pathlib import Path


class SegtoolError(Exception):
    """A problem with the user's input or options.

    The message is one line that names the file, the value and the fix; the command line
    prints it in red and exits with code 1.
    """


class InvalidInputError(SegtoolError):
    """One or more input files are malformed; `problems` lists them all (file: what: fix)."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{summary}: {shown}{more}")


class DiskFullError(SegtoolError):
    """The disk filled up while an output was being built; the old output is untouched."""


def os_error(exc: OSError, where: Path | None = None) -> SegtoolError:
    """One line for an operating-system error, naming the file (or `where`) and a fix."""
    name = exc.filename or where or "?"
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return DiskFullError(
            f"{name}: the disk is full; nothing was replaced; free space and run again"
        )
    if exc.errno == errno.EROFS:
        return SegtoolError(f"{name}: read-only file system; pass a writable place")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SegtoolError(f"{name}: permission denied; pass a place you can write")
    if exc.errno == errno.ENOTDIR:
        return SegtoolError(f"{name}: a file stands where a folder is needed; pass another path")
    return SegtoolError(f"{name}: {exc.strerror or exc}")


def check_choice(option: str, value: str, choices: Iterable[str]) -> None:
    """Refuse a value that is not one of an option's choices, listing them.

    Args:
        option: the option's name without dashes (``loss``, ``augment``...).
        value: what the user gave.
        choices: the valid values, in the order the help shows them.

    Raises:
        SegtoolError: ``--OPTION 'value' is not one of a, b, c``.
    """
    choices = list(choices)
    if value not in choices:
        raise SegtoolError(f"--{option} {value!r} is not one of {', '.join(choices)}")


_WORKER_ERRNO = re.compile(r"^\[Errno (\d+)\] (.+?)(?:: '(.+)')?$")


def from_worker(exc: BaseException) -> BaseException:
    """The error a data-loading worker raised, as raised there.

    torch's DataLoader re-raises a worker's exception in the main process as a new one of the
    same type whose message is ``Caught X in DataLoader worker process N`` and the worker's
    whole traceback (2 KB on one line, once made safe to print). This gives back an exception
    of that type holding only the original message (an `OSError` its number and file too), or
    `exc` itself when it is not such a wrapper."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    message = last.partition(": ")[2] if ": " in last else last
    errno_match = _WORKER_ERRNO.match(message)
    if isinstance(exc, OSError) and errno_match:
        number, reason, name = errno_match.groups()
        return type(exc)(int(number), reason, name)
    if isinstance(exc, InvalidInputError):
        return SegtoolError(message)
    try:
        return type(exc)(message)
    except Exception:
        return SegtoolError(message)
