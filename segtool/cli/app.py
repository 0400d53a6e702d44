"""The ``segtool`` command: one sub-command per pipeline step, on argparse.

Only the command being run is imported (its module declares its options in ``configure`` and
does its work in ``run``); ``segtool --help`` lists every command from the table below without
importing any, and nothing heavy (torch, numpy) loads before a command needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from segtool import __version__
from segtool.cli.common import (
    ArgumentParser,
    HelpFormatter,
    State,
    UsageError,
    interrupted,
    run_command,
)


class Command(NamedTuple):
    """A sub-command: its module and the one-line summary ``segtool --help`` shows (the first
    line of the module's ``HELP``; a test keeps the two equal)."""

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
}

DESCRIPTION = """\
Polygon annotations to a trained segmentation model and an honest score.

rasterize -> split -> train -> predict / evaluate. Each command's --help shows an example."""


def root_parser() -> argparse.ArgumentParser:
    """``segtool [--debug] COMMAND``: it reads the arguments up to the command's name; the rest
    are the command's own, for its parser."""
    width = max(len(name) for name in COMMANDS) + 2
    listing = "\n".join(f"  {name:<{width}}{c.summary}" for name, c in COMMANDS.items())
    parser = ArgumentParser(
        prog="segtool",
        usage="%(prog)s [--debug] COMMAND [arguments and options]",
        description=DESCRIPTION,
        epilog=f"commands:\n{listing}",
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback on errors.")
    parser.add_argument("--version", action="version", version=f"segtool {__version__}")
    parser.add_argument(
        "command", metavar="COMMAND", choices=COMMANDS, help="One of the commands below."
    )
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of the command `name` (its module imported now), set to run it."""
    module = importlib.import_module(COMMANDS[name].module)
    parser = ArgumentParser(
        prog=f"segtool {name}",
        description=module.HELP,
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # --over is not --overwrite: no option is guessed
    )
    module.configure(parser)
    # --debug is a global option, also taken after the command (where users add it when told).
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(run=module.run)
    return parser


def literal_paths(arguments: list[str]) -> list[str]:
    """The command's `arguments` with a ``--`` taken out and each path after it that starts with
    ``-`` written as ``./-name`` (the same path), so that no parse reads it as an option.

    ``segtool rasterize -- -annotations out/`` names a folder called ``-annotations``; argparse's
    intermixed parse would drop the ``--`` and then refuse the name as an unknown option. Every
    positional argument of every command is a path, and ``Path("./-a") == Path("-a")``."""
    if "--" not in arguments:
        return arguments
    cut = arguments.index("--")
    after = [f"./{arg}" if arg.startswith("-") else arg for arg in arguments[cut + 1 :]]
    return [*arguments[:cut], *after]


def attached_values(parser: argparse.ArgumentParser, arguments: list[str]) -> list[str]:
    """`arguments` with a value that starts with ``-`` attached to its option.

    argparse reads ``--time-budget -5m`` as an option missing its value (only plain negative
    numbers are taken as values), so the user would read "expected one argument" instead of
    what is wrong with ``-5m``. An option that takes one value, followed by something that is
    not one of the command's options, is passed as ``--time-budget=-5m``."""
    options = parser._option_string_actions  # argparse has no public table of them
    joined: list[str] = []
    tokens = iter(arguments)
    for arg in tokens:
        action = options.get(arg)
        if arg == "--":  # paths only from here on
            return [*joined, arg, *tokens]
        if action is None or action.nargs is not None:  # not an option taking one value
            joined.append(arg)
            continue
        value = next(tokens, None)
        if value is not None and value.startswith("-") and value not in options:
            joined.append(f"{arg}={value}")
        else:
            joined.extend(v for v in (arg, value) if v is not None)
    return joined


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: parse `argv` (default: the process's arguments), run the
    command, and exit with its code (0 done, 1 a user error, 2 a usage error, 130 Ctrl-C).

    Options may come before, between and after a command's paths (as in
    ``segtool import-masks images/ --images link masks/ out/``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    root = root_parser()
    if not argv:
        root.print_help()
        raise SystemExit(0)
    # The root's own options come before the command's name; all after it is the command's.
    named = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    try:
        top = root.parse_args(argv[: named + 1])
        parser = command_parser(top.command)  # imports the command's module
        args = parser.parse_intermixed_args(
            literal_paths(attached_values(parser, argv[named + 1 :]))
        )
    except KeyboardInterrupt:  # Ctrl-C right after Enter: as during the work, no traceback
        if "--debug" in argv:
            raise
        raise SystemExit(interrupted()) from None
    State.debug = top.debug or args.debug
    try:
        code = run_command(args.run, args)
    except UsageError as exc:
        parser.error(str(exc))  # the command's usage line and the message; exit code 2
    raise SystemExit(code)
