"""The command line: help without torch, the error boundary, rasterize end to end."""

from __future__ import annotations

import os
import subprocess
import sys

from segtool import __version__
from tests.cli import invoke
from tests.conftest import read_png, shape, write_labelme


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from tests.cli import invoke\n"
        "from segtool.cli.app import COMMANDS\n"
        "assert invoke(['--help']).exit_code == 0\n"
        "loaded = [c.module for c in COMMANDS.values() if c.module in sys.modules]\n"
        "assert loaded == [], loaded  # the list of commands imports none of them\n"
        "for command in ([], *([name] for name in COMMANDS)):\n"
        "    args = [*command, '--help']\n"
        "    assert invoke(args).exit_code == 0\n"
        "heavy = ('torch', 'segmentation_models_pytorch', 'albumentations', 'numpy', 'PIL')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_rasterize_loads_only_what_it_needs(tmp_path, labels_txt):
    # A user runs the command in a fresh interpreter: start-up is part of its time, so the
    # polygon path must not load numpy, OpenCV or torch (the 8-bit masks are PIL's alone).
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    code = (
        "import sys\n"
        "from tests.cli import invoke\n"
        "args = ['rasterize', sys.argv[1], sys.argv[2], '--labels', sys.argv[3], '--jobs', '1']\n"
        "result = invoke(args)\n"
        "assert result.exit_code == 0, result.output\n"
        "print([m for m in ('numpy', 'cv2', 'torch', 'rich.progress') if m in sys.modules])\n"
    )
    args = [str(tmp_path / "ann"), str(tmp_path / "ds"), str(labels_txt)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert read_png(tmp_path / "ds/masks/x.png")[0, 0] == 2


def test_evaluate_of_a_small_folder_loads_only_what_it_needs(tmp_path):
    # Without HD95 and object scores: a few classes count without OpenCV or SciPy, and a small
    # folder is scored without worker processes. (PIL is loaded: matplotlib, which draws
    # confusion.png, writes PNGs through it.)
    import numpy as np

    from segtool.core.classes import make_class_map
    from segtool.core.masks import write_mask

    cmap = make_class_map(["_background_", "a", "b"])
    for folder, shift in (("gt", 0), ("pred", 1)):
        (tmp_path / folder).mkdir()
        mask = np.roll(np.arange(48, dtype=np.uint8).reshape(6, 8) % 3, shift)
        write_mask(tmp_path / folder / "m.png", mask, cmap)
    cmap.save(tmp_path / "classes.json")
    code = (
        "import sys\n"
        "from tests.cli import invoke\n"
        "args = ['evaluate', sys.argv[1], sys.argv[2], '--no-hd95', '--no-objects', '--out',"
        " sys.argv[3]]\n"
        "result = invoke(args)\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = ('cv2', 'torch', 'multiprocessing', 'scipy', 'rich.progress')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    args = [str(tmp_path / "pred"), str(tmp_path / "gt"), str(tmp_path / "report")]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "report" / "summary.json").is_file()


def test_version():
    result = invoke(["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"segtool {__version__}"


def test_rasterize_command(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = invoke(
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
    result = invoke(["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "class map derived from the annotations: 0=_background_, 1=dog" in result.stderr


def test_user_error_is_one_red_line_and_exit_1(tmp_path):
    (tmp_path / "ann").mkdir()
    result = invoke(["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no *.json" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_debug_shows_the_exception(tmp_path):
    (tmp_path / "ann").mkdir()
    result = invoke(["--debug", "rasterize", str(tmp_path / "ann"), str(tmp_path / "ds")])
    assert result.exit_code == 1 and result.exception is not None
    assert "no *.json" in str(result.exception)
    after = invoke(["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds"), "--debug"])
    assert after.exit_code == 1 and "no *.json" in str(after.exception)


def test_bad_usage_is_exit_2(tmp_path):
    result = invoke(["rasterize", str(tmp_path), str(tmp_path), "--images", "nope"])
    assert result.exit_code == 2


def test_python_dash_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "segtool", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"segtool {__version__}"


def test_train_options_cover_the_config_and_show_its_defaults():
    from dataclasses import fields

    from segtool.cli import train as train_cli
    from segtool.cli.app import load_command
    from segtool.train.config import PLANNED, TrainConfig

    params = {p.name: p for p in load_command("train").params}
    defaults = TrainConfig()
    assert set(train_cli.OPTIONS) == {f.name for f in fields(TrainConfig)}  # one entry each
    for field in fields(TrainConfig):
        assert field.name in params, f"TrainConfig.{field.name} has no segtool train option"
        option = params[field.name]
        assert option.opts[0] == "--" + field.name.replace("_", "-")
        assert option.rich_help_panel in train_cli.PANELS, f"--{field.name} needs a help panel"
        assert option.default in (None, False)  # unset: the plan or the config decides
        value = getattr(defaults, field.name)
        if field.name in PLANNED:  # the plan chooses it when it is not given
            assert "\\[default: planned]" in option.help, field.name
        elif value is not None and not isinstance(value, bool):
            assert f"\\[default: {value}]" in option.help, field.name
    shown = invoke(["train", "--help"]).stdout
    assert all(f"─ {panel} ─" in shown for panel in train_cli.PANELS) and "--focal-gamma" in shown
    # The help's markup is rich's: the defaults are shown as text, not taken for markup tags.
    assert "[default: planned]" in shown and "[default: 0.3]" in shown


def test_every_command_is_listed_with_its_own_summary():
    import importlib

    from segtool.cli.app import COMMANDS

    listed = invoke(["--help"]).stdout
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert command.summary == module.command.__doc__.splitlines()[0], name
        assert name in listed and command.summary in listed


def test_bounded_options_and_choices_are_usage_errors(tmp_path):
    train = ["train", tmp_path, "--out", tmp_path / "o"]
    for args, says in (
        (["rasterize", tmp_path, tmp_path / "o", "--png-level", "10"], "less than or equal to 9"),
        (["rasterize", tmp_path, tmp_path / "o", "--jobs", "0"], "greater than or equal to 1"),
        (["rasterize", tmp_path, tmp_path / "o", "--jobs", "two"], "valid integer"),
        (["rasterize", tmp_path, tmp_path / "o", "-j", "100000"], "less than or equal to"),
        (["evaluate", tmp_path, tmp_path, "--gallery", "-1"], "--gallery"),
        (["evaluate", tmp_path], "pass PRED and GT folders"),
        # Options of the other form of evaluate would be ignored: refused instead.
        (["evaluate", tmp_path, tmp_path, "--tta"], "--tta goes with --model RUN DATASET"),
        (["evaluate", tmp_path, tmp_path, "--split", "val"], "--split goes with --model"),
        (["evaluate", tmp_path, tmp_path, "--device", "cpu"], "--device goes with --model"),
        (["evaluate", "--model", tmp_path, tmp_path, "--allow-missing"], "--allow-missing sc"),
        (["evaluate", "--model", tmp_path, tmp_path, "--classes", tmp_path], "--classes scores"),
        (["predict", tmp_path, tmp_path, tmp_path / "o", "--overlap", ".5"], "add --tile or drop"),
        (["import-masks", tmp_path], "pass IMAGES MASKS OUT or ROOT OUT, not 1 path(s)"),
        (["split", tmp_path, "--val", "x"], "'--val': Input should be a valid number"),
        (["train", tmp_path], "--out"),
        # An empty path is the current folder to pathlib: --out "$UNSET" must not name it.
        (["rasterize", tmp_path, ""], "'OUT': '' is an empty path"),
        ([*train[:3], "", "--overwrite"], "'--out': '' is an empty path"),
        (["evaluate", tmp_path, tmp_path, "--out", ""], "'--out': '' is an empty path"),
        # Numbers a run cannot use: refused before anything starts, not deep inside torch.
        ([*train, "--lr", "nan"], "'--lr': 'nan' is not a finite number"),
        ([*train, "--warmup-epochs", "inf"], "'inf' is not a finite number"),
        ([*train, "--fg-crop", "1e400"], "'--fg-crop': '1e400' is not a finite number"),
        ([*train, "--bce-weight", "-1"], "'--bce-weight': -1 is out of range; give 0"),
        ([*train, "--fg-crop", "2"], "give a value from 0 to 1"),
        ([*train, "--seed", "-1"], "'--seed': Input should be greater than or equal to 0"),
    ):
        result = invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.stderr and result.stderr.startswith("Usage: segtool"), result.stderr
        assert not (tmp_path / "o").exists()


def test_train_hands_each_option_to_fit_and_leaves_unset_ones_to_the_config(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import segtool.train.loop as loop

    seen = {}

    def fake_fit(dataset, out, **options):
        seen.update(options)
        return SimpleNamespace(main_process=False)

    monkeypatch.setattr(loop, "fit", fake_fit)
    args = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--loss", "focal"]
    args += ["--focal-gamma", "3", "--clip-grad", "0", "--warmup-epochs", "2", "--skip-unpaired"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert seen["loss"] == "focal" and seen["focal_gamma"] == 3.0
    assert seen["clip_grad"] == 0.0 and seen["warmup_epochs"] == 2.0
    assert seen["epochs"] is None and seen["lr"] is None  # unset: the plan decides
    # An on/off option not given is unset too: --resume keeps the run's own (--tune-thresholds).
    assert seen["skip_unpaired"] is True and seen["tune_thresholds"] is None and seen["amp"] is None


def test_user_strings_cannot_drive_the_terminal(capsys):
    from segtool.cli.common import clean, table, warn

    assert clean("road [/] [bold]") == "road [/] [bold]"  # markup-like text is text
    assert clean("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"
    assert clean("a\nb\tc\r") == "a\\nb\\tc\\r"  # no line of segtool's can be forged
    table("t", ["class", "pixels"], [["evil\x1b[2J", 3]])
    warn("label \x1b]0;title\x07")
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out and "\x1b" not in captured.err
    assert "evil\\x1b[2J" in captured.out and "\\x1b]0;title\\x07" in captured.err


def test_no_command_shows_the_commands_and_an_unknown_one_is_a_usage_error():
    alone = invoke(["--debug"])
    assert alone.exit_code == 2
    assert "Missing command." in alone.stderr, alone.stderr
    listed = invoke([])
    assert listed.exit_code == 0 and "rasterize" in listed.stdout and "evaluate" in listed.stdout
    unknown = invoke(["rasterise", "a", "b"])
    assert unknown.exit_code == 2 and "No such command 'rasterise'" in unknown.stderr
    assert "Did you mean 'rasterize'?" in unknown.stderr
    guessed = invoke(["rasterize", "a", "b", "--over"])  # no option is guessed from a prefix
    assert guessed.exit_code == 2 and "No such option: --over" in guessed.stderr


def test_options_may_come_between_paths(tmp_path):
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.png")
    Image.new("L", (4, 4), 255).save(tmp_path / "masks" / "a.png")
    args = [tmp_path / "images", "--images", "link", tmp_path / "masks", "-j", "1", tmp_path / "ds"]
    result = invoke(["import-masks", *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds/images/a.png").stat().st_ino == (tmp_path / "images/a.png").stat().st_ino


def test_after_a_double_dash_every_argument_is_a_path(tmp_path, monkeypatch):
    # A folder whose name starts with "-" is named after "--", as every command line tool takes it.
    monkeypatch.chdir(tmp_path)
    write_labelme(tmp_path / "-ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = invoke(["rasterize", "--", "-ann", "out"])
    assert result.exit_code == 0, result.output
    assert read_png(tmp_path / "out/masks/x.png")[0, 0] == 1
    result = invoke(["rasterize", "-j", "1", "--", "-ann", "--out"])
    assert result.exit_code == 0, result.output
    assert read_png(tmp_path / "--out/masks/x.png")[0, 0] == 1
    extra = invoke(["rasterize", "--", "-ann", "out2", "-j1"])  # an option after "--" is a path
    assert extra.exit_code == 2 and "unexpected extra argument(s) (-j1)" in extra.stderr
    assert not (tmp_path / "out2").exists()


def test_a_value_starting_with_a_dash_belongs_to_its_option(tmp_path, monkeypatch):
    # "--time-budget -5m" is the option and its (wrong) value, as "--time-budget=-5m" is: the
    # user reads what is wrong with -5m, not that --time-budget lacks a value.
    for args in (["--time-budget", "-5m"], ["--time-budget=-5m"]):
        result = invoke(["train", tmp_path, "--out", tmp_path / "run", *args])
        assert result.exit_code == 1 and "--time-budget '-5m': give a duration" in result.stderr
    # A value may start with "-": a labels file called "-labels.txt".
    monkeypatch.chdir(tmp_path)
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    (tmp_path / "-labels.txt").write_text("__ignore__\n_background_\ndog\n")
    result = invoke(["rasterize", "ann", "out", "--labels", "-labels.txt"])
    assert result.exit_code == 0, result.output
    assert read_png(tmp_path / "out/masks/x.png")[0, 0] == 1
    # A forgotten value is still one: the next option is not taken as it.
    missing = invoke(["rasterize", "ann", "out2", "--labels", "--overwrite"])
    assert not (tmp_path / "out2").exists()
    assert missing.exit_code == 2 and "'--labels' requires an argument" in missing.stderr
    # After "--" nothing is an option or a value: a folder "--labels" and an output "-out".
    (tmp_path / "ann").rename(tmp_path / "--labels")
    after = invoke(["rasterize", "-j", "1", "--", "--labels", "-out"])
    assert after.exit_code == 0, after.output
    assert read_png(tmp_path / "-out/masks/x.png")[0, 0] == 1


def test_usage_errors_show_control_characters_escaped(tmp_path):
    result = invoke(["rasterize", tmp_path, tmp_path / "o", "\x1b[2Jextra\x07"])
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "unexpected extra argument(s) (\\x1b[2Jextra\\x07)" in result.stderr


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    # segtool rasterize ... | head: the masks are written; no error about the pipe.
    write_labelme(tmp_path / "ann", "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "segtool", "rasterize", tmp_path / "ann", tmp_path / "ds"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1, result.stderr
    assert "error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert read_png(tmp_path / "ds/masks/x.png")[0, 0] == 1


def test_plan_only_checks_the_options_as_a_run_does(tmp_path):
    from tests.synthetic import make_dataset

    dataset = make_dataset(tmp_path / "ds", n=8, size=32)
    args = ["train", dataset, "--out", tmp_path / "run", "--plan-only", "--device", "cpu"]
    result = invoke([*args, "--size", "abc"])
    assert result.exit_code == 1, result.output
    assert "--size 'abc'" in result.stderr and result.stdout == ""
    assert not (tmp_path / "run").exists()


def test_training_output_shows_control_characters_escaped():
    import io

    from rich.console import Console

    from segtool.cli.train_progress import RichReporter, plan_table

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(plan_table([{"option": "size", "value": "\x1b[2J", "why": "given \x1b]0;t\x07"}]))
    reporter = RichReporter(console)
    reporter.epoch_start(1, 1, 1)
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_dice": 0.5, "val_iou": 0.3}
    reporter.epoch_end({**row, "seconds": 1.0, "dice_evil\x1b[2J": 0.5})
    shown = console.file.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "\\x1b]0;t\\x07" in shown and "evil\\x1b[2J 0.500" in shown


def test_resume_hint_can_be_pasted_into_a_shell(tmp_path, capsys):
    from pathlib import Path
    from types import SimpleNamespace

    import pytest

    from segtool.cli.train_progress import print_result as _print_result

    result = SimpleNamespace(
        stopped="interrupted",
        kept=True,
        best_epoch=1,
        epochs_done=1,
        best_per_class={"a": 0.5},
        best_dice=0.5,
        thresholds=None,
        saved_steps=0,
    )
    with pytest.raises(SystemExit) as stop:
        _print_result(result, Path("my data"), Path("run 1"))
    assert stop.value.code == 130
    assert (
        "continue with: segtool train 'my data' --out 'run 1' --resume" in capsys.readouterr().err
    )


def test_table_columns_line_up_on_screen_with_wide_characters(capsys):
    from segtool.cli.common import table

    table("t", ["class", "pixels"], [["猫猫", 3], ["dog", 10], ["e\u0301", 7]])
    # 猫 takes two columns on a terminal, the combining accent none: the cells are padded to
    # what is seen, not to the number of characters.
    assert capsys.readouterr().out.splitlines() == [
        "t",
        "class  pixels",
        "-----  ------",
        "猫猫        3",
        "dog        10",
        "e\u0301           7",
    ]


def test_output_on_a_stream_without_the_characters_is_escaped_not_an_error():
    import io

    from segtool.cli.common import emit

    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    emit("dög 猫", stream)  # e.g. output redirected to a file on a system with an ASCII locale
    assert stream.buffer.getvalue() == b"d\\xf6g \\u732b\n"


def test_a_line_break_in_a_user_string_cannot_forge_a_line(tmp_path):
    write_labelme(tmp_path / "ann", "x", [shape("dog\n 9  fake  1", [[0, 0], [3, 3]], "rectangle")])
    result = invoke(["rasterize", tmp_path / "ann", tmp_path / "ds"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith(" ")]
    assert rows[-1].split()[:2] == ["1", "dog\\n"] and len(rows) == 2, result.stdout
    missing = invoke(["split", tmp_path / "no\nerror: fine"])
    assert missing.exit_code == 1 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert "no\\nerror: fine" in missing.stderr


def test_ctrl_c_while_the_command_loads_is_exit_130_without_a_traceback(monkeypatch):
    import segtool.cli.app as app

    def slow_import(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "load_command", slow_import)
    result = invoke(["rasterize", "a", "b"])
    assert result.exit_code == 130 and result.exception is None
    assert result.stderr == "interrupted\n"


def test_shell_completion_offers_commands_options_and_choices():
    from segtool.cli.train import LOSSES

    def complete(words: str) -> list[str]:
        env = {"_SEGTOOL_COMPLETE": "complete_bash", "COMP_WORDS": words}
        result = invoke([], env={**env, "COMP_CWORD": str(len(words.split(" ")) - 1)})
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    assert complete("segtool ras") == ["rasterize"]
    assert complete("segtool train data --focal") == ["--focal-gamma"]
    assert complete("segtool train data --loss ") == list(LOSSES)
    assert "--install-completion" in invoke(["--help"]).stdout


def test_markup_in_a_user_string_is_printed_as_it_is(tmp_path):
    # rich draws the usage errors: a name holding rich markup is text, not a style.
    result = invoke(["rasterize", tmp_path, tmp_path / "o", "[bold]x[/bold]"])
    assert result.exit_code == 2 and "extra argument(s) ([bold]x[/bold])" in result.stderr
    missing = invoke(["rasterize", tmp_path / "[red]ann[/red]", tmp_path / "o"])
    assert missing.exit_code == 1 and "[red]ann[/red]: no such file" in missing.stderr


def test_help_paragraphs_are_joined_and_examples_kept():
    from segtool.cli.app import reflow

    doc = """Title line.

    Prose wrapped in the source
    at its own width.

    example:
      segtool split a/ --val 6
      segtool split b/
    """
    assert reflow(doc) == (
        "Title line.\n\nProse wrapped in the source at its own width.\n\n"
        "example:\n  segtool split a/ --val 6\n  segtool split b/"
    )
