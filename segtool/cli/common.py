"""What every command shares: the consoles, the error boundary, the progress bar."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from segtool.core.errors import InvalidInputError, SegtoolError

#: Results (tables, summaries) go to stdout.
out = Console(soft_wrap=True)
#: Diagnostics (progress, warnings, errors) go to stderr.
err = Console(stderr=True, soft_wrap=True)


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
    code 1 (with the traceback under ``--debug``); Ctrl-C is exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SegtoolError as exc:
            if State.debug:
                raise
            err.print(f"[bold red]error:[/] {_escape(exc)}")
            if isinstance(exc, InvalidInputError) and len(exc.problems) > 5:
                for problem in exc.problems[5:]:
                    err.print(f"  {_escape(problem)}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if State.debug:
                raise
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _escape(value: object) -> str:
    from rich.markup import escape

    return escape(str(value))


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
