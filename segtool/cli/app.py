"""The ``segtool`` command: one sub-command per pipeline step, on typer.

Only the command being run is imported: ``segtool --help`` lists every command from the table
below (its summary only), and a command's module is loaded when it runs or shows its help.
Nothing heavy (torch, numpy, PIL) loads before a command needs it.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from segtool import __version__
from segtool.cli import loaded
from segtool.cli.common import UsageError, clean, interrupted, run_command
from segtool.core.signals import end_now
from segtool.core.signals import install as install_signal_handlers


class Command(NamedTuple):
    """A sub-command: its module (which holds the function ``command``) and the one-line
    summary ``segtool --help`` shows (the first line of the function's docstring; a test keeps
    the two equal)."""

    module: str
    summary: str


COMMANDS = {
    "rasterize": Command("segtool.cli.rasterize", "Rasterize annotations into PNG label masks."),
    "import-masks": Command(
        "segtool.cli.import_masks", "Turn images and masks made elsewhere into a dataset."
    ),
    "split": Command("segtool.cli.split", "Split a dataset into train, val and test."),
    "train": Command("segtool.cli.train", "Train a segmentation model and write the run folder."),
    "predict": Command(
        "segtool.cli.predict", "Predict label masks for new images with a trained model."
    ),
    "evaluate": Command("segtool.cli.evaluate", "Score predicted label masks against references."),
    "export": Command(
        "segtool.cli.export",
        "Export a run's model to ONNX or TorchScript, checked against the run on real images.",
    ),
}

#: Options every command takes, before or after its name.
GLOBAL_FLAGS = ("--debug",)
#: typer's settings for every command: -h is --help too, and rich markup in help texts.
SETTINGS: dict[str, Any] = {"context_settings": {"help_option_names": ["-h", "--help"]}}


class SegtoolCommand(TyperCommand):
    """A typer command with segtool's error boundary (`run_command`) around its work."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """Parse as click does (a value may start with ``-``: ``--time-budget -5m``), except
        that an option followed by another of the command's options lacks its value: the user
        forgot it (``--labels --overwrite``), and nothing is taken as a file name."""
        names = {*GLOBAL_FLAGS}
        takes_value = set()
        for param in self.get_params(ctx):
            if param.param_type_name == "option":
                names.update(param.opts, param.secondary_opts)
                if not (param.is_flag or param.count):
                    takes_value.update(param.opts)
        for arg, following in itertools.pairwise(args):
            if arg == "--":
                break
            if arg in takes_value and following in names:
                ctx.fail(f"Option {arg!r} requires an argument (got the option {following}).")
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; a user error is one red line and exit code 1, Ctrl-C 130, options
        that do not go together a usage error (exit code 2)."""
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            code = run_command(lambda: TyperCommand.invoke(self, ctx), debug)
        except UsageError as exc:
            ctx.fail(clean(exc))
        if code:
            raise typer.Exit(code)


class Commands(TyperGroup):
    """segtool's commands, each loaded when it is run (or its help or completion is shown);
    listing them needs only the table."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, entry in COMMANDS.items():  # what --help lists and typos are matched against
            self.commands[name] = TyperCommand(name, help=entry.summary, **SETTINGS)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """No arguments: the help. ``--debug`` after the command's name is taken as given
        before it (where users add it when an error line asks for it)."""
        if not args:
            args = ["--help"]
        end = args.index("--") if "--" in args else len(args)
        flags = [arg for arg in args[:end] if arg in GLOBAL_FLAGS]
        rest = [arg for arg in args[:end] if arg not in GLOBAL_FLAGS]
        return super().parse_args(ctx, [*flags, *rest, *args[end:]])

    def resolve_command(
        self, ctx: typer.Context, args: list[str]
    ) -> tuple[str | None, Any, list[str]]:
        """The command named first in `args`, its module imported now."""
        name, command, rest = super().resolve_command(ctx, args)
        if name in COMMANDS:
            try:
                command = load_command(name)
            except KeyboardInterrupt:  # Ctrl-C right after Enter: as during the work
                if ctx.params.get("debug"):
                    raise
                raise typer.Exit(interrupted()) from None
        return name, command, rest


def load_command(name: str) -> Any:
    """The click command of `name`, built from its module's ``command`` function."""
    module = importlib.import_module(COMMANDS[name].module)
    one = typer.Typer(add_completion=False, rich_markup_mode="rich")
    help = reflow(module.command.__doc__ or "")
    one.command(name, cls=SegtoolCommand, help=help, **SETTINGS)(module.command)
    return typer.main.get_command(one)


def reflow(doc: str) -> str:
    """A docstring as help text that fits the terminal: the lines of each prose paragraph
    joined (rich wraps them at the terminal's width, where typer would keep the source's line
    breaks and wrap each line again), paragraphs with indented lines (examples) kept as
    written."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()[1:]) else " ".join(p.split("\n"))
        for p in paragraphs
    )


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"segtool {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=Commands,
    name="segtool",
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # a traceback (--debug) never prints the user's data
    **SETTINGS,
)


@app.callback()
def segtool(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Polygon annotations to a trained segmentation model and an honest score.

    rasterize -> split -> train -> predict / evaluate. Each command's --help shows an example.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: parse `argv` (default: the process's arguments), run the
    command, and exit with its code (0 done, 1 a user error, 2 a usage error, 130 Ctrl-C).

    Options may come before, between and after a command's paths (as in
    ``segtool import-masks images/ --images link masks/ out/``); after ``--`` every argument
    is a path.

    Run as the process's command (no `argv`), the process ends as soon as the command is
    done (`end_now`: exit handlers run, no interpreter teardown)."""
    loaded()  # Ctrl-C from here on interrupts the command, which cleans up
    install_signal_handlers()  # SIGTERM and SIGHUP end a command as Ctrl-C does
    try:
        app(args=list(sys.argv[1:] if argv is None else argv), prog_name="segtool")
    except SystemExit as done:
        if argv is None:
            end_now(done.code)
        raise
