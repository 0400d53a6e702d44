"""What every command shares: the consoles, the error boundary, the progress bar."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from typer.exceptions import TyperException

from segtool.core.errors import InvalidInputError, SegtoolError

#: Results (tables, summaries) go to stdout.
out = Console(soft_wrap=True)
#: Diagnostics (progress, warnings, errors) go to stderr.
err = Console(stderr=True, soft_wrap=True)


#: The --max-pixels option of every command that reads images or masks.
MaxPixelsOption = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images larger than this many pixels (decompression bombs) "
        "\\[default: 178956970].",
    ),
]


def use_max_pixels(limit: int | None) -> None:
    """Apply --max-pixels to this process and the workers it starts."""
    from segtool.core.limits import set_max_pixels

    set_max_pixels(limit)


class ImageMode(str, Enum):
    """How original images reach ``dataset/images``."""

    copy = "copy"
    link = "link"
    none = "none"


#: The --images option of every command that writes a dataset folder.
ImagesOption = Annotated[
    ImageMode, typer.Option(help="Copy, hard-link or leave out the original images.")
]

#: The --jobs option of every command that spreads files over worker processes.
JobsOption = Annotated[
    int | None,
    typer.Option("--jobs", "-j", min=1, help="Worker processes \\[default: all cores]."),
]


class State:
    """Options of the top-level command, read by the error boundary."""

    debug: bool = False


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The one place where exceptions become exit codes: a user error is one red line and exit
    code 1 (with the traceback under ``--debug``); Ctrl-C is exit code 130. An error from the
    operating system (full disk, read-only place, a file where a folder should be) is a user
    error too; anything else is still one line, which asks for ``--debug`` and a report."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException, click.exceptions.ClickException):
            raise  # usage errors and exits keep typer's own handling (exit code 2, ...)
        except KeyboardInterrupt:
            if State.debug:
                raise
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:
            if State.debug:
                raise
            error_line(exc)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def error_line(exc: Exception) -> None:
    """Print an exception as one red ``error:`` line (and the rest of a long problem list)."""
    from segtool.core.files import os_error

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
    err.print(f"[bold red]error:[/] {_escape(exc)}", highlight=False)
    if isinstance(exc, InvalidInputError) and len(exc.problems) > 5:
        for problem in exc.problems[5:]:
            err.print(f"  {_escape(problem)}", highlight=False)


def _escape(value: object) -> str:
    from rich.markup import escape

    return escape(str(value))


#: Escape a user string (a class name, a path) for rich markup: ``[/]`` is text, not a tag.
esc = _escape


def warn(message: str) -> None:
    """Print a yellow warning line on stderr."""
    err.print(f"[yellow]warning:[/] {_escape(message)}", highlight=False)


def _no_progress(phase: str, done: int, total: int) -> None:
    """The progress callback when no bar is shown."""


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr; yields an ``on_progress(phase, done, total)`` callback.

    Without a terminal there is nothing to show, and no bar is built (nor rich's progress
    module imported)."""
    if not err.is_terminal:
        yield _no_progress
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
        console=err,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    with progress:
        yield update
