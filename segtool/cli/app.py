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
from segtool.cli.common import HelpFormatter, State, UsageError, run_command


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


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for `argv`: every command is listed, and the one `argv` names gets its
    options (the others are not imported)."""
    parser = argparse.ArgumentParser(
        prog="segtool", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback on errors.")
    parser.add_argument("--version", action="version", version=f"segtool {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, command in COMMANDS.items():
        if name != wanted:
            commands.add_parser(name, help=command.summary, add_help=False)
            continue
        module = importlib.import_module(command.module)
        sub = commands.add_parser(
            name,
            help=command.summary,
            description=module.HELP,
            formatter_class=HelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(run=module.run, usage_of=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: parse `argv` (default: the process's arguments), run the
    command, and exit with its code (0 done, 1 a user error, 2 a usage error, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    if not argv:
        parser.print_help()
        raise SystemExit(0)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.error("name a command, e.g. segtool rasterize --help")
    State.debug = args.debug
    try:
        code = run_command(args.run, args)
    except UsageError as exc:
        args.usage_of.error(str(exc))  # the command's usage line and the message; exit code 2
    raise SystemExit(code)
