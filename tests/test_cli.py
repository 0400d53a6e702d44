"""The command line: help without torch, the error boundary, rasterize end to end."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from segtool import __version__
from segtool.cli.app import app
from tests.conftest import read_png, shape, write_labelme

runner = CliRunner()


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from segtool.cli.app import app\n"
        "for command in ([], ['rasterize'], ['split'], ['train'], ['predict'], ['evaluate']):\n"
        "    args = [*command, '--help']\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "heavy = [m for m in ('torch', 'segmentation_models_pytorch', 'albumentations') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"segtool {__version__}"


def test_rasterize_command(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = runner.invoke(
        app,
        [
            "rasterize",
            str(tmp_path / "ann"),
            str(tmp_path / "ds"),
            "--labels",
            str(labels_txt),
            "--jobs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 masks written" in result.stdout and "dog" in result.stdout
    assert read_png(tmp_path / "ds/masks/x.png")[0, 0] == 2


def test_rasterize_prints_derived_map(tmp_path):
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = runner.invoke(app, ["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "class map derived from the annotations: 0=_background_, 1=dog" in result.stderr


def test_user_error_is_one_red_line_and_exit_1(tmp_path):
    (tmp_path / "ann").mkdir()
    result = runner.invoke(app, ["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no *.json" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_debug_shows_the_exception(tmp_path):
    (tmp_path / "ann").mkdir()
    result = runner.invoke(
        app, ["--debug", "rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")]
    )
    assert result.exit_code == 1 and result.exception is not None
    assert "no *.json" in str(result.exception)


def test_bad_usage_is_exit_2(tmp_path):
    result = runner.invoke(app, ["rasterize", str(tmp_path), str(tmp_path), "--images", "nope"])
    assert result.exit_code == 2


def test_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "segtool", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"segtool {__version__}"
