"""The ``segtool`` command: a typer app with one sub-command per pipeline step.

Nothing heavy is imported here: torch and segmentation-models-pytorch load inside the
commands that need them, so ``segtool --help`` answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from segtool import __version__
from segtool.cli import evaluate as evaluate_cmd
from segtool.cli import import_masks as import_masks_cmd
from segtool.cli import predict as predict_cmd
from segtool.cli import rasterize as rasterize_cmd
from segtool.cli import split as split_cmd
from segtool.cli import train as train_cmd
from segtool.cli.common import State

app = typer.Typer(
    name="segtool",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segtool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Polygon annotations to a trained segmentation model and an honest score.

    rasterize → split → train → predict / evaluate. Each command's --help shows an example.
    """
    State.debug = debug


app.command("rasterize")(rasterize_cmd.rasterize)
app.command("import-masks")(import_masks_cmd.import_masks)
app.command("split")(split_cmd.split)
app.command("train")(train_cmd.train)
app.command("predict")(predict_cmd.predict)
app.command("evaluate")(evaluate_cmd.evaluate)


def main() -> None:
    """Console-script entry point."""
    app()
