"""What every command shares: its options, the output lines and tables, the error boundary and
the progress bar.

The options shared by several commands are typer ``Annotated`` types, declared here once.
Results are written straight to the streams (rich is loaded only to draw a progress bar on a
terminal, for help, and by ``segtool train``): nothing is imported that the command does not
use.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer

from segtool.core.constants import IMAGE_MODES
from segtool.core.errors import InvalidInputError, SegtoolError

#: PIL's own limit on image pixels, which --max-pixels replaces.
DEFAULT_MAX_PIXELS = 178956970


class UsageError(SegtoolError):
    """Options that do not go together: shown with the command's usage, exit code 2."""


# --- options -------------------------------------------------------------------------------


def path_arg(text: str) -> Path:
    """An option's parser: a path, not empty (``Path("")`` is the current folder, which an
    unset shell variable, ``--out "$RUN"``, would otherwise name)."""
    if isinstance(text, Path):
        return text
    if not text:
        raise typer.BadParameter(f"{text!r} is an empty path; name a file or folder")
    return Path(text)


def finite(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An option's parser: a finite number between `low` and `high`, inclusive (typer's own
    ranges let ``inf`` and ``1e400`` through, which no run can use)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number") from None
        if not math.isfinite(value):  # nan, inf, 1e400
            raise typer.BadParameter(f"{text!r} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"a value from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
            raise typer.BadParameter(f"{text} is out of range; give {span}")
        return value

    return parse


def max_jobs() -> int:
    """The most worker processes --jobs may ask for: 4 per core, and 32 on any machine (a
    mistyped --jobs 100000 would start that many processes, and hang the machine)."""
    from segtool.core.parallel import default_jobs

    return max(32, 4 * default_jobs())


def with_default(help: str, default: object) -> str:
    """`help` ending in the default it names (one that is not the option's value, which stays
    None when unset), shown as typer shows the others: ``[default: ...]``."""
    return f"{help} \\[default: {default}]"  # an escaped bracket: rich markup would eat it


def path_argument(metavar: str, help: str) -> Any:
    """A path argument (an empty one is refused), shown as `metavar`, with its `help`."""
    return typer.Argument(parser=path_arg, metavar=metavar, help=help, show_default=False)


def flag(name: str, help: str, **kwargs: Any) -> Any:
    """An on/off option, off unless given (no ``--no-`` form)."""
    return typer.Option(name, help=help, show_default=False, **kwargs)


def path_option(*names: str, help: str, metavar: str, **kwargs: Any) -> Any:
    """A path option (an empty one is refused) with its `help`."""
    return typer.Option(*names, parser=path_arg, help=help, metavar=metavar, **kwargs)


#: --jobs, of every command that spreads files over worker processes (each a process started
#: before any work is done, so at most `max_jobs`).
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs", "-j", min=1, max=max_jobs(), metavar="N",
        help=with_default("Worker processes.", "all cores"), show_default=False,
    ),
]  # fmt: skip


def max_pixels_option(**kwargs: Any) -> Any:
    """--max-pixels, of every command that reads images or masks."""
    return typer.Option(
        min=1,
        metavar="N",
        show_default=False,
        help=with_default(
            "Refuse images larger than this many pixels (decompression bombs).", DEFAULT_MAX_PIXELS
        ),
        **kwargs,
    )


MaxPixels = Annotated[int | None, max_pixels_option()]
#: --overwrite, of the commands that write a folder OUT.
Overwrite = Annotated[bool, flag("--overwrite", "Replace OUT if it exists.")]
#: --images, of every command that writes a dataset folder.
Images = Annotated[
    Literal[IMAGE_MODES], typer.Option(help="Copy, hard-link or leave out the original images.")
]


def use_max_pixels(limit: int | None) -> None:
    """Apply --max-pixels to this process and the workers it starts."""
    from segtool.core.limits import set_max_pixels

    set_max_pixels(limit)


# --- output --------------------------------------------------------------------------------

_STYLES = {"bold": "1", "red": "1;31", "yellow": "33"}


def styled(text: str, style: str, stream: TextIO) -> str:
    """`text` in `style` where `stream` is a terminal (and NO_COLOR is not set)."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()) or os.environ.get("NO_COLOR"):
        return text
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def clean(value: object) -> str:
    """A user string made safe to print: control characters (which could move the cursor or
    clear the terminal) are shown escaped, line breaks and tabs too (a class name or a path
    holding one would start a line that looks like segtool's own), everything else as it is."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def emit(text: str, stream: TextIO) -> None:
    """Write the line `text` to `stream` now; a character the stream's encoding lacks is
    written as its escape (``\\u732b``). A reader that stopped reading (``segtool ... | head``)
    ends the command quietly with exit code 1: its output is already in place."""
    try:
        try:
            print(text, file=stream, flush=True)
        except UnicodeEncodeError:  # a stream that cannot show every character (ASCII, cp1252)
            encoding = getattr(stream, "encoding", None) or "ascii"
            text = text.encode(encoding, "backslashreplace").decode(encoding)
            print(text, file=stream, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # the rest goes nowhere, silently
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        raise SystemExit(1) from None


def say(text: str) -> None:
    """A line of results on stdout."""
    emit(clean(text), sys.stdout)


def note(text: str) -> None:
    """A line of diagnostics on stderr."""
    emit(clean(text), sys.stderr)


def warn(message: str) -> None:
    """A yellow ``warning:`` line on stderr."""
    emit(f"{styled('warning:', 'yellow', sys.stderr)} {clean(message)}", sys.stderr)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A table on stdout: its title, a header, and rows whose cells line up; columns of
    numbers are right-aligned, the others left-aligned. A row of None is a rule."""
    shown = [None if row is None else [clean(c) for c in row] for row in rows]
    cells = [row for row in shown if row is not None]
    widths = [max([_width(h), *(_width(r[i]) for r in cells)]) for i, h in enumerate(columns)]
    left = [any(not _numeric(r[i]) for r in cells) for i in range(len(columns))]

    def line(row: Sequence[str]) -> str:
        pads = [" " * (w - _width(c)) for c, w in zip(row, widths, strict=True)]
        parts = [c + pad if lj else pad + c for c, pad, lj in zip(row, pads, left, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [clean(title), styled(line(list(columns)), "bold", sys.stdout), rule]
    lines += [rule if row is None else line(row) for row in shown]
    emit("\n".join(lines), sys.stdout)


def _width(text: str) -> int:
    """The columns `text` takes on a terminal: a wide (East Asian) character takes two, a
    combining mark none."""
    if text.isascii():
        return len(text)
    from unicodedata import combining, east_asian_width

    return sum(0 if combining(c) else 2 if east_asian_width(c) in "WF" else 1 for c in text)


def _numeric(cell: str) -> bool:
    """A cell that reads as a number (or is empty, or a dash for none)."""
    return cell.rstrip("%").replace(".", "", 1).replace("-", "", 1).isdigit() or cell in ("", "—")


# --- errors --------------------------------------------------------------------------------


def run_command(work: Callable[[], None], debug: bool) -> int:
    """The one place where exceptions become exit codes: run `work`; a user error is one red
    line and exit code 1 (with the traceback when `debug`); Ctrl-C is exit code 130. An error
    from the operating system (full disk, read-only place, a file where a folder should be) is
    a user error too; anything else is still one line, which asks for ``--debug`` and a report.
    `UsageError` is re-raised for the caller to show with the usage (exit code 2)."""
    try:
        work()
    except UsageError:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        return interrupted()
    except Exception as exc:
        if debug:
            raise
        error_line(exc)
        return 1
    return 0


def load_torch() -> None:
    """Load torch with Ctrl-C, SIGTERM and SIGHUP held until it is loaded (a second or more):
    a signal handled inside one of its C++ import callbacks aborts the process ("terminate
    called after throwing ... Terminated") instead of interrupting the command. Each command
    that uses a model calls this before anything else loads torch."""
    from segtool.core.signals import deferred_signals

    with deferred_signals():
        import torch  # noqa: F401


def interrupted() -> int:
    """Say that Ctrl-C stopped the command; its exit code, 130."""
    emit(styled("interrupted", "red", sys.stderr), sys.stderr)
    return 130


def error_line(exc: Exception) -> None:
    """Print an exception as one red ``error:`` line (and the rest of a long problem list)."""
    from segtool.core.errors import from_worker, os_error

    exc = from_worker(exc)  # a worker's error as raised there, not wrapped in its traceback
    if isinstance(exc, OSError):
        exc = os_error(exc)
    elif isinstance(exc, RecursionError):
        exc = SegtoolError(f"input nested too deeply to read ({exc}); check the input files")
    elif isinstance(exc, MemoryError):
        exc = SegtoolError("out of memory; use smaller images, --tile, or a smaller --batch-size")
    elif not isinstance(exc, SegtoolError):
        exc = SegtoolError(
            f"unexpected {type(exc).__name__}: {exc}; run again with segtool --debug ... to see "
            f"where, and report it"
        )
    emit(f"{styled('error:', 'red', sys.stderr)} {clean(exc)}", sys.stderr)
    if isinstance(exc, InvalidInputError) and len(exc.problems) > 5:
        for problem in exc.problems[5:]:
            emit(f"  {clean(problem)}", sys.stderr)


# --- progress ------------------------------------------------------------------------------


def err_console() -> Any:
    """A rich console on stderr (for the progress bar and training's live view)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


#: How a long phase's line reads when the output is not a terminal (a log file has no
#: progress bar): its verb and what it counts, by the phase's name in ``on_progress``.
PHASES = {
    "check": ("checking", "files"),
    "rasterize": ("rasterizing", "files"),
    "import": ("importing", "image/mask pairs"),
    "measure": ("measuring", "masks"),
    "predict": ("predicting", "images"),
    "evaluate": ("scoring", "prediction/reference pairs"),
    "cache": ("caching", "cases"),
}
#: Seconds a phase runs before its line is printed: one done sooner needs none, and an error
#: found at once stays the only line.
PHASE_LINE_AFTER = 5.0


def phase_lines(
    what: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic
) -> Callable[[str, int, int], None]:
    """The ``on_progress(phase, done, total)`` callback when the output is not a terminal: one
    line for each phase still running `PHASE_LINE_AFTER` seconds after its first report (done
    0, as it starts): "predicting 1,234 images" (`PHASES`; `what` may name what a phase
    counts for this command, a volume folder's cases). `clock` reads the time."""
    started: dict[str, float] = {}
    shown: set[str] = set()

    def update(phase: str, done: int, total: int) -> None:
        if phase in shown or phase not in PHASES:
            return
        since = started.setdefault(phase, clock())
        if done < total and clock() - since >= PHASE_LINE_AFTER:
            shown.add(phase)
            verb, items = PHASES[phase]
            note(f"{verb} {total:,} {(what or {}).get(phase, items)}")

    return update


@contextmanager
def progress_bar(what: dict[str, str] | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr; yields an ``on_progress(phase, done, total)`` callback.

    Without a terminal no bar is built (nor rich imported): a long phase prints one line
    instead (`phase_lines`, `what` naming what a phase counts)."""
    if not sys.stderr.isatty():
        yield phase_lines(what)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Files (or images) per second."""

        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")

    progress = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    with progress:
        yield update


def refuse_image_options(*given: tuple[str, bool], volumes: bool = True) -> None:
    """Refuse, in one line, the first option given that does not apply to the input: one for
    2-D images given for volumes (or, with `volumes` False, one for volume folders given for
    images). An option that does not apply is refused, never silently ignored.

    Raises:
        UsageError: naming the option.
    """
    applies, given_for = ("2-D images", "volumes") if volumes else ("volume folders", "images")
    for option, on in given:
        if on:
            raise UsageError(f"{option} applies to {applies}, not to {given_for}; drop it")
