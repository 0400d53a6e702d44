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


def test_train_options_cover_the_config_and_show_its_defaults():
    from dataclasses import fields
    from typing import get_type_hints

    from segtool.cli import train as train_cli
    from segtool.train.config import TrainConfig

    hints = get_type_hints(train_cli.train.__wrapped__, include_extras=True)
    defaults = TrainConfig()
    for field in fields(TrainConfig):
        assert field.name in hints, f"TrainConfig.{field.name} has no segtool train option"
        option = hints[field.name].__metadata__[0]
        assert option.rich_help_panel in train_cli.PANELS, f"--{field.name} needs a help panel"
        value = getattr(defaults, field.name)
        if value is not None and not isinstance(value, bool):
            assert f"[default: {value}]" in option.help, field.name
    shown = runner.invoke(app, ["train", "--help"], terminal_width=200).stdout
    assert all(panel in shown for panel in train_cli.PANELS) and "--focal-gamma" in shown


def test_train_hands_each_option_to_fit_and_leaves_unset_ones_to_the_config(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import segtool.train.loop as loop

    seen = {}

    def fake_fit(dataset, out, **options):
        seen.update(options)
        return SimpleNamespace(main_process=False)

    monkeypatch.setattr(loop, "fit", fake_fit)
    args = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--loss", "focal"]
    args += ["--focal-gamma", "3", "--clip-grad", "0", "--warmup-epochs", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["loss"] == "focal" and seen["focal_gamma"] == 3.0
    assert seen["clip_grad"] == 0.0 and seen["warmup_epochs"] == 2.0
    assert seen["epochs"] is None and seen["lr"] is None  # unset: TrainConfig decides
