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
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError
from segtool.core.signals import deferred_signals

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
_RENAME_NOREPLACE = 1
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


#: Called with the output's path just before each swap (a moment tests and tools can act in,
#: as a second program writing there would).
on_swap: Callable[[Path], None] | None = None


class SwapConflict(SegtoolError):
    """Something at an output changed while segtool built it: nothing there was replaced, and
    the finished result was kept beside it (`kept`)."""

    def __init__(self, message: str, kept: Path) -> None:
        super().__init__(message)
        self.kept = kept


#: What identifies the object at a path: device, inode, file type, modification time (ns) and
#: size (a file edited in place within the clock's tick changes its size, as a rule).
Identity = tuple[int, int, int, int, int]


def identity(path: Path) -> Identity | None:
    """What is at `path` now (the link itself for a link), or None when nothing is."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode), st.st_mtime_ns, st.st_size)


def _libc_renameat2() -> Callable[..., int] | None:
    global _RENAMEAT2
    if _RENAMEAT2 is False:
        try:
            _RENAMEAT2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            _RENAMEAT2 = None
    return _RENAMEAT2


_RENAMEAT2: Any = False


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux renameat2(a, b, flags); False where the system or file system cannot."""
    renameat2 = _libc_renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b) if code == errno.EEXIST else str(a))


def _move_new(tmp: Path, path: Path) -> bool:
    """Move `tmp` to `path` only if nothing is there; False (nothing moved) if something is.

    Linux's renameat2(RENAME_NOREPLACE) where it works; elsewhere a file is hard-linked (which
    fails if the name is taken) and its temporary name removed, and a folder's name is first
    claimed with an empty folder of its own, which a rename may then replace (a rename
    replaces only an empty folder, so one filled in the meantime is not lost)."""
    try:
        if _renameat2(tmp, path, _RENAME_NOREPLACE):
            return True
        if not tmp.is_dir() or tmp.is_symlink():
            os.link(tmp, path, follow_symlinks=False)
            os.unlink(tmp)
            return True
        os.mkdir(path)
        os.rename(tmp, path)
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _exchange_checked(tmp: Path, path: Path, seen: Identity) -> bool:
    """Swap `tmp` with `path` if `path` still holds the object `seen`; False if it does not.

    Where the system can exchange two names atomically, the object that came back is checked
    after the exchange too, and exchanged back if another took its place in the meantime."""
    now = identity(path)
    if now is None:  # gone since it was checked: nothing there can be lost
        return _move_new(tmp, path)
    if now != seen:
        return False
    if _renameat2(tmp, path, _RENAME_EXCHANGE):
        if identity(tmp) != seen:  # an exchange changes no time or size of what it moves
            _renameat2(tmp, path, _RENAME_EXCHANGE)  # not the one checked: put it back
            return False
        remove_path(tmp)  # now holds the old output
        return True
    if not tmp.is_dir():
        os.replace(tmp, path)
        return True
    old = temp_name(path, "old")
    os.replace(path, old)
    os.replace(tmp, path)
    remove_path(old)
    return True


def kept_name(path: Path) -> Path:
    """Where a finished output that could not be put in place is kept: beside it, under a name
    that says so (``OUT.not-placed-PID``, numbered if taken)."""
    kept = path.parent / f"{path.name}.not-placed-{os.getpid()}"
    number = 1
    while os.path.lexists(kept):
        number += 1
        kept = path.parent / f"{path.name}.not-placed-{os.getpid()}-{number}"
    return kept


def place(tmp: Path, path: Path, seen: Identity | None, option: str = "") -> None:
    """Put the finished `tmp` at `path`, replacing only the object that was checked there.

    Args:
        tmp: the finished file or folder, beside `path`.
        path: the output's place.
        seen: `identity(path)` when it was checked: None (nothing was there) moves `tmp` in
            only if nothing has appeared since; otherwise only that same object is replaced.
        option: the option naming `path` in messages (``--out``).

    Raises:
        SwapConflict: something appeared at `path`, or what was there changed, since it was
            checked; it is left as it is and `tmp` is kept beside it (`kept_name`).
    """
    if on_swap is not None:
        on_swap(path)
    with deferred_signals():
        placed = _move_new(tmp, path) if seen is None else _exchange_checked(tmp, path, seen)
        if placed:
            return
        kept = kept_name(path)
        os.rename(tmp, kept)
    what = "appeared" if seen is None else "changed"
    shown = f"{option} {path}" if option else str(path)
    raise SwapConflict(
        f"{shown}: something {what} there while segtool was working (another program, or a "
        f"second segtool, wrote it); it was left as it is and the finished result is in "
        f"{kept}: move it where you want it",
        kept,
    )
