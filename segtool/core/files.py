"""Writing files and folders: checked first, built beside, swapped in at the end; the one
output mechanism of every command, which declares what it reads and writes to one `OutputPlan`:

- an output that is, contains or lies inside an input is refused, naming the input (paths are
  compared after resolving symbolic links and ``..``); so is an output that is a link, lies
  under a file or in a folder that cannot be written;
- an existing output is replaced only with ``--overwrite``, and only the object that was
  checked (its identity is recorded; `swap.place`): what appears or changes there while the
  command runs is never replaced, the finished result is kept beside it instead;
- each output is built beside its place (``.NAME.segtool-new-HOST-PID``) and swapped in only
  when the command has finished, atomically where the system allows, so the old output stays
  whole through any error, Ctrl-C, SIGTERM, ``kill -9`` or full disk; temporaries of killed runs
  are cleared by the next run that writes there; files get the user's umask (no 0600 files).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segtool.core.errors import DiskFullError as DiskFullError  # re-exported
from segtool.core.errors import SegtoolError, os_error
from segtool.core.parallel import stop_all
from segtool.core.reading import list_files as list_files  # re-exported
from segtool.core.reading import read_json as read_json  # re-exported
from segtool.core.signals import deferred_signals
from segtool.core.swap import Identity, clear_stale, identity, place, remove_path, temp_name


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


@dataclass
class Output:
    """One file or folder a command writes (`option` names it in messages, e.g. ``--out``)."""

    path: Path
    folder: bool
    option: str
    tmp: Path | None = None
    #: what was at `path` when it was first checked (None: nothing); only that is replaced
    seen: Identity | None = None
    checked: bool = False


@dataclass
class OutputPlan:
    """The inputs and outputs of one command; see the module docstring for the rules.

    Args:
        overwrite: whether existing outputs may be replaced (the command's ``--overwrite``).
    """

    overwrite: bool = False
    #: the process whose id names the temporaries (default: this one); under torchrun the
    #: launcher's, so that every rank finds the run being built
    owner: int | None = None
    inputs: list[tuple[str, Path, bool]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    _made: list[Path] = field(default_factory=list)

    def read(self, what: str, path: Path | None, *, files_only: bool = False) -> None:
        """Declare an input (`what` names it for the user: "the dataset", "the images folder").

        `files_only`: the command reads only the mask or image files directly in the folder, so
        an output of another kind may lie inside it (evaluate's summary.json beside the
        predictions); being or containing it is still refused.
        """
        if path is not None:
            self.inputs.append((what, path, files_only))

    def write(self, path: Path, *, folder: bool, option: str) -> Output:
        """Declare an output; returns its record (its ``tmp`` is set by `build`)."""
        output = Output(path, folder, option)
        self.outputs.append(output)
        return output

    # --- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        """Run every output check; nothing is touched.

        Raises:
            SegtoolError: an output collides with an input, is a symbolic link, sits under a
                file, cannot be written, or exists without ``--overwrite``.
        """
        for earlier in _EARLIER.get():
            self.keep_checks(earlier)
        for output in self.outputs:
            self._check_collisions(output)
            self._check_place(output)
            if not output.checked:
                output.seen, output.checked = identity(output.path), True

    def keep_checks(self, checked: OutputPlan) -> None:
        """Take what `checked` (an earlier check, before any input was read) saw at each
        output: only that may be replaced."""
        earlier = {o.path: o for o in checked.outputs if o.checked}
        for output in self.outputs:
            if output.path in earlier:
                output.seen, output.checked = earlier[output.path].seen, True

    def _check_collisions(self, output: Output) -> None:
        target = _resolved(output.path)
        for what, path, files_only in self.inputs:
            source = _resolved(path)
            if target == source:
                relation = "is"
            elif _inside(source, target):
                relation = "contains"
            elif _inside(target, source) and not files_only:
                relation = "lies inside"
            else:
                continue
            raise SegtoolError(
                f"{output.option} {output.path} {relation} {what} {path}, which this command "
                f"reads; writing there could destroy it: choose an output outside {path}"
            )

    def _check_place(self, output: Output) -> None:
        path, option = output.path, output.option
        if path.is_symlink():
            raise SegtoolError(
                f"{option} {path} is a symbolic link (to {os.readlink(path)}); segtool does not "
                f"write through links: pass the real path"
            )
        if path.exists() and path.is_dir() != output.folder:
            kind = "a folder" if path.is_dir() else "a file"
            raise SegtoolError(f"{option} {path} is {kind}; pass another path")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            if ancestor.is_symlink():  # a dangling link in the way
                break
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise SegtoolError(
                f"{option} {path}: {ancestor} is a file, not a folder; pass a path in a folder"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise SegtoolError(
                f"{option} {path}: cannot write in {ancestor} (read-only or no permission); "
                f"pass a writable place"
            )
        if os.path.lexists(path) and not self.overwrite:
            raise SegtoolError(f"{option} {path}: already exists; pass --overwrite to replace it")

    # --- building -----------------------------------------------------------------------------

    @contextmanager
    def build(self) -> Iterator[OutputPlan]:
        """Check, then create each output's temporary beside it; commit them all on success.

        On any exception (Ctrl-C included) the temporaries are removed and every existing
        output is left as it was; a full disk becomes `DiskFullError`.
        """
        self.start()
        try:
            yield self
            self.commit()
        except BaseException as exc:
            if isinstance(exc, OSError):
                self.name_outputs(exc)
            self.discard()
            if isinstance(exc, OSError):
                raise os_error(exc, self.outputs[0].path if self.outputs else None) from exc
            raise

    def name_outputs(self, exc: OSError) -> None:
        """Make `exc` name the output the user asked for where it names one's temporary (a
        full disk while writing ``.OUT.segtool-new-…/x`` is reported as ``OUT/x``)."""
        name = exc.filename
        if not isinstance(name, str | os.PathLike):
            return
        name = os.fspath(name)
        for output in self.outputs:
            if output.tmp is None:
                continue
            tmp = os.fspath(output.tmp)
            if name == tmp or name.startswith(tmp + os.sep):
                exc.filename = os.fspath(output.path) + name[len(tmp) :]
                return

    def start(self) -> None:
        """Check, clear temporaries of killed runs, and create each output's temporary (a
        folder output's is an empty folder); `commit` or `discard` must follow."""
        self.check()
        try:
            for output in self.outputs:
                self._make_parents(output.path.parent)
                clear_stale(output.path)
                output.tmp = temp_name(output.path, pid=self.owner)
                remove_path(output.tmp)
                if output.folder:
                    output.tmp.mkdir()
        except BaseException:
            self.discard()
            raise

    def _make_parents(self, folder: Path) -> None:
        """Create `folder` and its missing parents, remembering them for `discard`."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            made.mkdir()
            self._made.append(made)

    def commit(self) -> None:
        """Move every finished temporary into place (an output never written is skipped),
        replacing only what `check` saw there.

        Raises:
            SwapConflict: something appeared at an output, or what was there changed, while the
                command ran; it is left as it is, and the finished result kept beside it.
        """
        with deferred_signals():  # a signal waits until every output is in place
            for output in self.outputs:
                tmp, output.tmp = output.tmp, None
                if tmp is not None and os.path.lexists(tmp):
                    place(tmp, output.path, output.seen, output.option)

    def discard(self) -> None:
        """Remove every temporary (and the folders made for them); the existing outputs are
        untouched. Worker processes still writing into them are stopped first."""
        stop_all()
        for output in self.outputs:
            if output.tmp is not None:
                remove_path(output.tmp)
                output.tmp = None
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()  # only if empty
        self._made.clear()


#: Plans checked at a command's start, whose outputs later plans build (`checked_first`).
_EARLIER: ContextVar[tuple[OutputPlan, ...]] = ContextVar("segtool_earlier_checks", default=())


@contextmanager
def checked_first(plan: OutputPlan) -> Iterator[None]:
    """Within the block, a plan that writes one of `plan`'s outputs replaces only what
    `plan`'s check saw there (`OutputPlan.keep_checks`).

    For a command that checks all its outputs before any work and then builds them through
    other functions (``evaluate --model``: the predictions, then the report): something that
    appears at an output while it works is never replaced, even though the function that
    builds it is told to overwrite."""
    token = _EARLIER.set((*_EARLIER.get(), plan))
    try:
        yield
    finally:
        _EARLIER.reset(token)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary beside it, then rename), with the user's umask."""
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically (temporary beside it, then rename), with the user's umask."""
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path`; on success move it onto `path` (replacing only
    what was there when the block started: `swap.place`), else delete it.

    Unlike `tempfile.mkstemp`, nothing is created with mode 0600: whoever writes the temporary
    creates it, with the user's umask. An `OSError` from the block that names no file (a write
    through a handle on a full disk) is given `path`'s name, so its message can say which file.
    """
    tmp = temp_name(path)
    remove_path(tmp)
    seen = identity(path)
    try:
        yield tmp
        place(tmp, path, seen)
    except OSError as exc:
        # A write through a file handle (a full disk) names no file: name the one being written.
        if exc.filename is None:
            exc.filename = str(path)
        raise
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


@contextmanager
def output_folder(
    out: Path,
    overwrite: bool,
    *,
    option: str = "OUT",
    inputs: Iterable[tuple[str, Path | None]] = (),
) -> Iterator[Path]:
    """Build the folder `out` whole or not at all (an `OutputPlan` of one folder).

    Yields an empty temporary folder beside `out`; when the block finishes it replaces `out`,
    and when the block raises (Ctrl-C included) it is deleted and `out` is left as it was.
    Within `checked_first(check_output(...))`, made before any input was read, only what
    that check saw at `out` is replaced.

    Raises:
        SegtoolError: any check of `OutputPlan.check` (before anything is written).
    """
    plan = OutputPlan(overwrite=overwrite)
    for what, path in inputs:
        plan.read(what, path)
    target = plan.write(out, folder=True, option=option)
    with plan.build():
        yield target.tmp


def check_output(
    out: Path,
    overwrite: bool,
    *,
    folder: bool = True,
    option: str = "OUT",
    inputs: Iterable[tuple[str, Path | None]] = (),
    apart: Iterable[tuple[str, Path]] = (),
) -> OutputPlan:
    """Run `OutputPlan.check` for one output before any work starts (nothing is touched);
    `apart`: folders read for some files only (`out` may lie inside one, not be or contain it).

    Returns:
        The checked plan: build the outputs within `checked_first(plan)`, so that only what
        was at `out` now is replaced at the end.

    Raises:
        SegtoolError: as `OutputPlan.check`.
    """
    plan = OutputPlan(overwrite=overwrite)
    for what, path in inputs:
        plan.read(what, path)
    for what, path in apart:
        plan.read(what, path, files_only=True)
    plan.write(out, folder=folder, option=option)
    plan.check()
    return plan


def check_overwrite(out: Path, overwrite: bool, alternative: str = "") -> None:
    """Refuse to replace an existing `out` unless `overwrite` is set; `alternative` names
    another way out before ``--overwrite`` (``resume to continue it``).

    Raises:
        SegtoolError: `out` exists and `overwrite` is not set.
    """
    if os.path.lexists(out) and not overwrite:
        other = f"--{alternative} or " if alternative else ""
        raise SegtoolError(f"{out}: already exists; pass {other}--overwrite to replace it")


def give_user_mode(folder: Path) -> None:
    """Give every file in `folder` the mode the user's umask gives new files (libraries that
    write through a private temporary file leave it 0600, unreadable to the user's group)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def remove(path: Path) -> None:
    """Delete a file or a folder tree (the callers have checked it may go)."""
    remove_path(path)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document atomically."""
    write_text(path, json.dumps(doc, indent=2) + "\n")
