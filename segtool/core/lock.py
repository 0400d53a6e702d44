"""One writer per folder: an advisory lock that dies with its process.

`lock_folder` takes ``flock`` on the folder itself (no lock file to leave behind or to clear
after a crash); the kernel drops it when the process ends, however it ends. A second segtool
that wants to write the same folder is refused in one line naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from segtool.core.errors import SegtoolError


class FolderLock:
    """A held lock on a folder; released by `release`, at the end of a ``with`` block, when
    the object is dropped, or when the process ends."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        """Let another process write the folder."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """The process holding a flock on `path`, from Linux's /proc/locks (None elsewhere)."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def lock_folder(path: Path, what: str = "folder", option: str = "--out") -> FolderLock | None:
    """Lock the existing folder `path` for this process's writes (None when there is none).

    Args:
        path: the folder (a run folder being resumed, or one about to be replaced).
        what: what the folder is, for the message ("run").
        option: the option that named it, for the message.

    Raises:
        SegtoolError: another process holds the lock.
    """
    if not path.is_dir() or path.is_symlink():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = holder(path)
        who = f"another segtool (process {pid})" if pid else "another segtool process"
        raise SegtoolError(
            f"{option} {path}: {who} is writing this {what} now; wait for it to finish, or "
            f"pass another {option}"
        ) from None
    return FolderLock(fd, path)
