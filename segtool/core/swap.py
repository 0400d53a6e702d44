"""Temporary names beside an output, the atomic swap that puts a finished output in place, and
the recovery of temporaries left by killed runs.

A temporary is ``.NAME.segtool-new-HOST-PID`` (an output being built) or
``.NAME.segtool-old-HOST-PID`` (the previous output, moved aside where the system has no
atomic exchange). The host and process id say whose it is: a temporary of this host whose
process is gone is stale, and `clear_stale` removes it (or, for an ``old`` one whose output
is missing, puts it back).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
from pathlib import Path

#: Marker in the name of every temporary file or folder segtool creates beside an output.
TEMP_MARK = ".segtool-"


def _host_name() -> str:
    """This machine's network name (os.uname's, which is socket.gethostname's on POSIX, without
    loading the socket module)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", _host_name())[:40] or "host"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.segtool-(?P<kind>new|old)-(?P<host>[^-]+)-(?P<pid>\d+)$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_name(path: Path, kind: str = "new", pid: int | None = None) -> Path:
    """The temporary name beside `path` for this process (`kind` is ``new`` or ``old``)."""
    return path.parent / f".{path.name}.segtool-{kind}-{_HOST}-{pid or os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(path: Path) -> list[Path]:
    """Remove the temporary names beside `path` left by killed segtool runs on this host.

    A ``new`` temporary (an output that never finished) is deleted. An ``old`` one (the previous
    output, moved aside just before the new one was to take its place) is put back when `path`
    is missing, else deleted.

    Returns:
        The temporary paths that were cleared.
    """
    parent = path.parent
    if not parent.is_dir():
        return []
    cleared = []
    for entry in sorted(parent.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not match or match["name"] != path.name:
            continue
        if match["host"] != _HOST or _alive(int(match["pid"])):
            continue  # another machine's run, or a run still going: not ours to judge
        if match["kind"] == "old" and not os.path.lexists(path):
            os.replace(entry, path)
        else:
            remove_path(entry)
        cleared.append(entry)
    return cleared


def remove_path(path: Path) -> None:
    """Delete a file, a link or a folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def replace_path(tmp: Path, path: Path) -> None:
    """Move the finished `tmp` onto `path`, replacing what is there.

    A file is replaced with one atomic rename. A folder is exchanged atomically with the old one
    where the system allows; elsewhere the old one is first renamed aside (a killed run leaves it
    under a name `clear_stale` puts back).
    """
    if not os.path.lexists(path) or not path.is_dir():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        remove_path(tmp)  # now holds the old output
        return
    old = temp_name(path, "old")
    os.replace(path, old)
    os.replace(tmp, path)
    remove_path(old)
