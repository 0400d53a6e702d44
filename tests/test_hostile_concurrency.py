"""The world moving during a run: a second process or the user acting while a command works,
signals at chosen moments, files vanishing mid-run.

Each row is made deterministic by a hook, never by a sleep. An in-process row patches one
function (by default the output mechanism's `place`, just before the swap) so that the user's
action happens exactly there. A signal row runs segtool in a child process that announces the
chosen moment on stdout and blocks on a pipe; the test sends the signal then. Each row asserts
the hostile table's five checks (`tests.test_hostile`): the exit code; that the output names
what is at fault; no traceback (and one ``error:`` line for a user error); every file that
existed, or that the user made during the run, unchanged outside the row's declared outputs;
nothing temporary left. Signal rows also inspect the process tree: no child of the command
outlives it.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from segtool.core.errors import SegtoolError
from tests.cli import invoke
from tests.test_hostile import (
    LBL,
    ROOT,
    E,
    P,
    R,
    S,
    World,
    _say,
    base,
    cmd,
    leftovers,
    setup_out_exists,
    snapshot,
    train_args,
)

__all__ = ["base"]  # the hostile table's world, built once for this module too

IM = "import-masks"
PLACE = "segtool.core.files:place"
Action = Callable[[World], object]
Check = Callable[[World, object], None]


# --- what the user, or a second program, does during the run -----------------------------------


def make_folder(rel: str) -> Action:
    def run(w: World) -> None:
        (w.root / rel).mkdir(parents=True)
        (w.root / rel / "user.txt").write_text("made during the run")

    return run


def make_file(rel: str) -> Action:
    def run(w: World) -> None:
        (w.root / rel).write_text("made during the run")

    return run


def swap_in_other(rel: str) -> Action:
    """Another program puts a folder of its own at `rel` (a new object under the name)."""

    def run(w: World) -> None:
        other = w.root / "theirs"
        other.mkdir()
        (other / "theirs.txt").write_text("another program's result")
        delete(rel)(w)
        other.rename(w.root / rel)

    return run


def edit_file(rel: str) -> Action:
    """An editor saving `rel`: a new file renamed over it."""

    def run(w: World) -> None:
        (w.root / "edit~").write_text("edited by the user")
        (w.root / "edit~").rename(w.root / rel)

    return run


def delete(rel: str) -> Action:
    def run(w: World) -> None:
        path = w.root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return run


def copy_run_to(rel: str) -> Action:
    """A second training into the same --out finished first."""
    return lambda w: shutil.copytree(w.run, w.root / rel)


def second_segtool(args: Callable[[World], list], code: int = 0, says: str = "") -> Action:
    """A second segtool process, run to its end now; its own exit code and message checked."""

    def run(w: World) -> None:
        args_now = [str(a) for a in args(w)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "segtool", *args_now], capture_output=True, text=True, env=env
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert says in done.stderr, done.stderr

    return run


# --- checks ----------------------------------------------------------------------------------


def kept(w: World, rel: str) -> Path:
    """The finished result kept beside `rel` when it could not be put there."""
    return w.root / f"{rel}.not-placed-{os.getpid()}"


def check_kept(rel: str, inside: str) -> Check:
    def run(w: World, result) -> None:
        assert (kept(w, rel) / inside).exists(), sorted(p.name for p in w.root.iterdir())
        assert str(kept(w, rel)) in result.output

    return run


def check_exists(rel: str) -> Check:
    def run(w: World, result) -> None:
        assert (w.root / rel).exists(), sorted(p.name for p in w.root.iterdir())

    return run


def check_world(world: World, expected: dict[str, str], outputs: tuple[str, ...]) -> None:
    """Every entry of `expected` (relative path -> hash) as it was, outside `outputs`; nothing
    temporary left."""
    after = snapshot(world.root)
    owned = tuple(outputs) or ("\0",)
    changed = sorted(
        rel
        for rel in set(expected) | set(after)
        if expected.get(rel) != after.get(rel) and not rel.startswith(owned)
    )
    assert not changed, f"changed outside the declared outputs: {changed[:10]}"
    assert not leftovers(world.root), leftovers(world.root)


def hold_lock(folder: Path) -> int:
    """Take the advisory lock a writing segtool holds on `folder` (flock on the folder)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def no_split(w: World) -> None:
    (w.ds / "split.json").unlink()


def out_dataset(w: World) -> None:
    """OUT holds an earlier dataset (a copy of ds)."""
    shutil.copytree(w.ds, w.root / "out")


# --- the in-process table ---------------------------------------------------------------------


@dataclass
class During:
    """The world changes while a command runs (`during`, just before `at` is called)."""

    id: str
    args: Callable[[World], list]
    code: int
    says: Callable[[World], list[str]]
    during: Action | None
    #: the function ("module:name") just before whose first call `during` happens
    at: str = PLACE
    #: for `PLACE`: only at the swap of this output (its name)
    only: str | None = None
    setup: Callable[[World], object] | None = None
    check: Check | None = None
    #: paths (relative to the world) the command may create or replace
    outputs: tuple[str, ...] = ()
    #: a folder (relative to the world) that another segtool is writing: its lock is held
    locked: str | None = None


OUT = lambda w: w.root / "out"  # noqa: E731
NOT_PLACED = ("out.not-placed-",)
RASTER = (R, lambda w: w.ann, OUT, *LBL, "-j", "1")
VALUES = ("--values", "0=_background_,1=square,2=disc")
IMPORT = (IM, lambda w: w.ds / "images", lambda w: w.ds / "masks", OUT, *VALUES, "-j", "1")
PREDICT = (P, lambda w: w.run, lambda w: w.new, OUT)
EVAL = (E, lambda w: w.pred, lambda w: w.gt, "--out", OUT, "--no-hd95", "-j", "1")
EVAL_MODEL = (E, "--model", lambda w: w.run, lambda w: w.ds, "--split", "test", "--no-hd95")
APPEARED = _say(lambda w: w.root / "out", "appeared", "not-placed")
CHANGED = _say(lambda w: w.root / "out", "changed", "not-placed")

CASES = [
    # --- something appears at OUT (no --overwrite): it stays, the result is kept beside ---------
    During(
        "rasterize: a folder appears at OUT during the run",
        cmd(*RASTER),
        1,
        APPEARED,
        make_folder("out"),
        check=check_kept("out", "masks/a.png"),
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize: a file appears at OUT during the run",
        cmd(*RASTER),
        1,
        APPEARED,
        make_file("out"),
        check=check_kept("out", "classes.json"),
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize --overwrite: OUT absent when checked, made by another program during the run",
        cmd(*RASTER, "--overwrite"),
        1,
        APPEARED,
        make_folder("out"),
        outputs=NOT_PLACED,
    ),
    During(
        "import-masks: a folder appears at OUT during the run",
        cmd(*IMPORT),
        1,
        APPEARED,
        make_folder("out"),
        check=check_kept("out", "masks/s00.png"),
        outputs=NOT_PLACED,
    ),
    During(
        "split: split.json appears in the dataset during the run",
        cmd(S, lambda w: w.ds, "-j", "1"),
        1,
        _say(lambda w: w.ds / "split.json", "appeared", "not-placed"),
        make_file("ds/split.json"),
        setup=no_split,
        outputs=("ds/split.json.not-placed-",),
    ),
    During(
        "train: a second training into the same --out finished first",
        train_args(OUT),
        1,
        _say("--out", lambda w: w.root / "out", "appeared", "not-placed"),
        copy_run_to("out"),
        check=check_kept("out", "checkpoints/last.pt"),
        outputs=NOT_PLACED,
    ),
    During(
        "predict: a folder appears at OUT during the run",
        cmd(*PREDICT),
        1,
        APPEARED,
        make_folder("out"),
        check=check_kept("out", "n20.png"),
        outputs=NOT_PLACED,
    ),
    During(
        "evaluate: summary.json appears in --out during the run",
        cmd(*EVAL),
        1,
        _say(lambda w: w.root / "out" / "summary.json", "appeared", "not-placed"),
        make_file("out/summary.json"),
        only="summary.json",
        setup=lambda w: (w.root / "out").mkdir(),
        outputs=("out/summary.json.not-placed-", "out/per_image.csv"),
    ),
    During(
        "evaluate --model: the predictions folder appears during the run",
        cmd(*EVAL_MODEL, "--out", OUT),
        1,
        _say(lambda w: w.root / "out" / "predictions", "appeared"),
        make_folder("out/predictions"),
        only="predictions",
        outputs=("out/predictions.not-placed-",),
    ),
    During(
        "evaluate --model: the predictions folder appears after the first check, before predicting",
        cmd(*EVAL_MODEL, "--out", OUT),
        1,
        _say(lambda w: w.root / "out" / "predictions", "appeared", "not-placed"),
        make_folder("out/predictions"),
        at="segtool.predict.folder.predict_dir",
        outputs=("out/predictions.not-placed-",),
    ),
    During(
        "import-masks --overwrite: OUT absent when checked, made while the masks are scanned",
        cmd(*IMPORT, "--overwrite"),
        1,
        APPEARED,
        make_folder("out"),
        at="segtool.rasterize.import_masks._write",
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize --overwrite: OUT absent when checked, made while the annotations are read",
        cmd(*RASTER, "--overwrite"),
        1,
        APPEARED,
        make_folder("out"),
        at="segtool.rasterize.folder._sources",
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize: a second segtool writes the same OUT and finishes first",
        cmd(*RASTER),
        1,
        APPEARED,
        second_segtool(cmd(*RASTER)),
        check=check_kept("out", "masks/b.png"),
        outputs=NOT_PLACED,
    ),
    # --- with --overwrite only the object that was checked is replaced --------------------------
    During(
        "rasterize --overwrite: OUT replaced by another program during the run",
        cmd(*RASTER, "--overwrite"),
        1,
        CHANGED,
        swap_in_other("out"),
        setup=setup_out_exists,
        check=check_kept("out", "masks/a.png"),
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize --overwrite: the user saves a file into OUT during the run",
        cmd(*RASTER, "--overwrite"),
        1,
        CHANGED,
        make_file("out/notes.txt"),
        setup=setup_out_exists,
        outputs=NOT_PLACED,
    ),
    During(
        "rasterize --overwrite: OUT deleted during the run (nothing lost: the result is placed)",
        cmd(*RASTER, "--overwrite"),
        0,
        _say(),
        delete("out"),
        setup=setup_out_exists,
        check=check_exists("out/masks/a.png"),
        outputs=("out",),
    ),
    During(
        "import-masks --overwrite: OUT replaced by another program during the run",
        cmd(*IMPORT, "--overwrite"),
        1,
        CHANGED,
        swap_in_other("out"),
        setup=out_dataset,
        outputs=NOT_PLACED,
    ),
    During(
        "split --overwrite: the user edits split.json during the run",
        cmd(S, lambda w: w.ds, "-j", "1", "--overwrite"),
        1,
        _say(lambda w: w.ds / "split.json", "changed"),
        edit_file("ds/split.json"),
        outputs=("ds/split.json.not-placed-",),
    ),
    During(
        "train --overwrite: the run replaced by another training during the run",
        train_args(lambda w: w.run, "--overwrite"),
        1,
        _say(lambda w: w.run, "changed", "not-placed"),
        swap_in_other("run"),
        check=check_kept("run", "checkpoints/last.pt"),
        outputs=("run.not-placed-",),
    ),
    During(
        "predict --overwrite: the user adds a file to OUT during the run",
        cmd(*PREDICT, "--overwrite"),
        1,
        CHANGED,
        make_file("out/keep-me.txt"),
        setup=setup_out_exists,
        outputs=NOT_PLACED,
    ),
    During(
        "evaluate --overwrite: the user edits per_image.csv during the run",
        cmd(*EVAL, "--overwrite"),
        1,
        _say(lambda w: w.root / "out" / "per_image.csv", "changed"),
        edit_file("out/per_image.csv"),
        only="per_image.csv",
        setup=lambda w: (
            (w.root / "out").mkdir(),
            (w.root / "out" / "summary.json").write_text("{}"),
            (w.root / "out" / "per_image.csv").write_text("old"),
        ),
        outputs=("out/summary.json", "out/per_image.csv.not-placed-"),
    ),
    # --- one writer per run folder -------------------------------------------------------------
    During(
        "train --resume while another segtool writes the run",
        train_args(lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say(lambda w: w.run, "is writing this run"),
        None,
        locked="run",
    ),
    During(
        "train --overwrite while another segtool writes the run",
        train_args(lambda w: w.run, "--overwrite"),
        1,
        _say(lambda w: w.run, "is writing this run"),
        None,
        locked="run",
    ),
    During(
        "train --resume: a second segtool trying to resume the same run is refused",
        train_args(lambda w: w.run, "--resume", "--epochs", "2"),
        0,
        _say(),
        second_segtool(
            train_args(lambda w: w.run, "--resume", "--epochs", "3"),
            code=1,
            says="is writing this run",
        ),
        at="segtool.train.trainer:Trainer.save",
        outputs=("run",),
    ),
    # --- files vanishing mid-run ----------------------------------------------------------------
    During(
        "rasterize: an annotated image deleted after the check, before it is drawn",
        cmd(*RASTER),
        1,
        _say("b.png"),
        delete("ann/b.png"),
        at="segtool.rasterize.result.write_mask",
    ),
    During(
        "import-masks: a mask deleted after the scan, before it is converted",
        cmd(*IMPORT),
        1,
        _say("s03.png"),
        delete("ds/masks/s03.png"),
        at="segtool.rasterize.import_masks._convert",
    ),
    During(
        "evaluate: a prediction deleted after the pairing, before it is scored",
        cmd(*EVAL),
        1,
        _say("s14.png"),
        delete("pred/s14.png"),
        at="segtool.evaluate.report.score_pair",
    ),
    During(  # decoded once (the default), a mask is read before the first epoch, never again
        "train --workers 1 --decoded off: a mask deleted mid-run, found by a loader worker "
        "(one line)",
        train_args(OUT, "--workers", "1", "--decoded", "off"),
        1,
        _say("s03.png"),
        delete("ds/masks/s03.png"),
        at="segtool.train.trainer:Trainer.train_epoch",
    ),
    During(
        "predict: an image deleted after the listing, before it is read",
        cmd(*PREDICT),
        1,
        _say("n21.png"),
        delete("new/n21.png"),
        at="segtool.predict.reading.load_rgb",
    ),
]


def _hook(case: During, world: World, monkeypatch, seen: dict) -> None:
    """Make `case.during` happen just before the first matching call of `case.at`, and record
    what it changed (path -> new hash, or None where it deleted)."""
    module_name, name = case.at.split(":") if ":" in case.at else case.at.rsplit(".", 1)
    module = importlib.import_module(module_name)
    *owners, name = name.split(".")  # "module:Class.method" patches the class
    for owner in owners:
        module = getattr(module, owner)
    original = getattr(module, name)

    def hooked(*args, **kwargs):
        target = Path(args[1]).name if case.at == PLACE else None
        if "acted" not in seen and (case.only is None or target == case.only):
            pre = snapshot(world.root)
            case.during(world)
            post = snapshot(world.root)
            acted = {k: post.get(k) for k in set(pre) | set(post) if pre.get(k) != post.get(k)}
            for rel in [k for k, v in acted.items() if v is not None]:  # and the folders above
                acted.update({str(u): post[str(u)] for u in Path(rel).parents if str(u) != "."})
            seen["acted"] = acted
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, hooked)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_during(case: During, base: Path, tmp_path: Path, monkeypatch) -> None:
    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    if case.setup:
        case.setup(world)
    before = snapshot(world.root)
    seen: dict = {}
    if case.during is not None:
        _hook(case, world, monkeypatch, seen)
    held = hold_lock(world.root / case.locked) if case.locked else None
    try:
        result = invoke(case.args(world))
    finally:
        if held is not None:
            os.close(held)
    output = result.output
    assert result.exception is None, f"exception escaped: {result.exception!r}\n{output}"
    assert "Traceback" not in output, output
    assert result.exit_code == case.code, output
    for part in case.says(world):
        assert str(part) in output, f"{part!r} not in:\n{output}"
    if case.code == 1:
        assert output.count("error:") == 1, output
    if case.during is not None:
        assert "acted" in seen, "the moment of the row never came"
    expected = {**before, **seen.get("acted", {})}
    expected = {rel: value for rel, value in expected.items() if value is not None}
    check_world(world, expected, case.outputs)
    if case.check:
        case.check(world, result)


# --- signals at chosen moments, in a child process ------------------------------------------------

#: Runs ``segtool ARGS`` with each function of MODULE:NAME[,MODULE:NAME...] patched to announce
#: (``AT pid``) and block, in turn: the first before (or, for ``after``, after) its first call,
#: the next one at its first call after that, ... A held call polls the FIFO named by
#: argv[1] until the test writes to it (or the process ends). Workers forked later inherit it.
DRIVER = r"""
import importlib, os, sys, time
release, holds, when, args = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4:]
stage = [0]

def hold_at(index, original):
    def held(*a, **k):
        if stage[0] != index:
            return original(*a, **k)
        result = original(*a, **k) if when == "after" and index == 0 else None
        stage[0] += 1
        os.write(1, f"AT {os.getpid()}\n".encode())
        # Wait for the test's go without blocking in a system call: a signal the kernel gives
        # to another thread (a loader's feeder thread) would never wake a blocked open().
        fd = os.open(release, os.O_RDONLY | os.O_NONBLOCK)
        while True:
            try:
                if os.read(fd, 1):
                    break
            except BlockingIOError:  # the test is writing
                pass
            time.sleep(0.02)
        os.close(fd)
        return result if when == "after" and index == 0 else original(*a, **k)
    held.__qualname__ = held.__name__ = f"held_{index}"  # pickled by name, as workers need
    globals()[held.__name__] = held
    return held

for index, where in enumerate(holds):
    module_name, name = where.split(":")
    module = importlib.import_module(module_name)
    *owners, name = name.split(".")  # "module:Class.method" patches the class
    for owner in owners:
        module = getattr(module, owner)
    setattr(module, name, hold_at(index, getattr(module, name)))
from segtool.cli.app import main
main(args)
"""


@dataclass
class Signalled:
    """A signal sent to segtool at a chosen moment (`at`: just before, or after, a function)."""

    id: str
    args: Callable[[World], list]
    signals: tuple[int, ...]
    at: str
    #: the child's return code: -N when it ended by signal N (the shell's 128+N), else its code
    code: int
    says: Callable[[World], list[str]]
    when: str = "before"
    setup: Callable[[World], object] | None = None
    check: Check | None = None
    outputs: tuple[str, ...] = ()
    #: the signal goes to the whole process group (a terminal's Ctrl-C, systemd, Slurm)
    group: bool = False


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc's children lists."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except (OSError, ValueError):
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    """A process exists and is not a zombie (an exited process not yet reaped)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: set[int], limit: float = 60.0) -> set[int]:
    """Wait (on the processes themselves, through pidfds) for `pids` to end; those still
    alive after `limit` seconds."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            select.select([fd], [], [], limit)
        finally:
            os.close(fd)
    return {pid for pid in pids if alive(pid)}


def run_signalled(case: Signalled, world: World) -> tuple[int, str, set[int]]:
    """Run the row's command to its moment, send the signals, and return the exit status,
    stderr and the child processes it had."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    args = [str(a) for a in case.args(world)]
    release = world.root.parent / "release"
    os.mkfifo(release)
    child = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(release), case.at, case.when, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives each command
    )
    lines, children = "", set()
    for stage, signum in enumerate(case.signals):
        if stage < len(case.at.split(",")):  # the next moment
            line = child.stdout.readline()
            lines += line
            if not line.startswith("AT "):
                child.kill()
                out, err = child.communicate()
                pytest.fail(f"the moment never came: {lines}{out}{err}")
            children |= descendants(child.pid)
        if case.group:
            os.killpg(child.pid, signum)
        else:
            child.send_signal(signum)
    if len(case.at.split(",")) > 1:  # the last moment is held in segtool's clean-up: go on
        with open(release, "w") as fifo:
            fifo.write("go")
    out, err = child.communicate(timeout=600)
    return child.returncode, lines + out + err, children


def check_resumable(w: World, result) -> None:
    assert (w.root / "out" / "checkpoints" / "last.pt").is_file()


SIGNALLED = [
    Signalled(
        "rasterize -j 2: SIGTERM while the workers draw",
        cmd(*RASTER[:-2], "-j", "2"),
        (signal.SIGTERM,),
        "segtool.rasterize.result:write_mask",
        -signal.SIGTERM,
        _say("interrupted"),
    ),
    Signalled(
        "rasterize -j 2: SIGHUP (the terminal closed) while the workers draw",
        cmd(*RASTER[:-2], "-j", "2"),
        (signal.SIGHUP,),
        "segtool.rasterize.result:write_mask",
        -signal.SIGHUP,
        _say(),
    ),
    Signalled(
        "rasterize -j 2: Ctrl-C while the workers draw",
        cmd(*RASTER[:-2], "-j", "2"),
        (signal.SIGINT,),
        "segtool.rasterize.result:write_mask",
        130,
        _say("interrupted"),
    ),
    Signalled(
        "rasterize --overwrite: SIGTERM, then SIGTERM again during the clean-up",
        cmd(*RASTER, "--overwrite"),
        (signal.SIGTERM, signal.SIGTERM),
        "segtool.rasterize.result:write_mask,segtool.core.files:remove_path",
        -signal.SIGTERM,
        _say("interrupted"),
        setup=setup_out_exists,
    ),
    Signalled(
        "rasterize -j 4: Ctrl-C in a terminal (the whole process group), one worker idle",
        cmd(*RASTER[:-2], "-j", "4"),
        (signal.SIGINT,),
        "segtool.rasterize.result:write_mask",
        130,
        _say("interrupted"),
        group=True,
    ),
    Signalled(
        "evaluate -j 2: SIGTERM to the whole process group (systemd, Slurm) while workers score",
        cmd(*EVAL[:-2], "-j", "2"),
        (signal.SIGTERM,),
        "segtool.evaluate.report:score_pair",
        -signal.SIGTERM,
        _say("interrupted"),
        group=True,
    ),
    Signalled(
        "rasterize -j 2: kill -9 while workers draw (the workers die with it)",
        cmd(*RASTER[:-2], "-j", "2"),
        (signal.SIGKILL,),
        "segtool.rasterize.result:write_mask",
        -signal.SIGKILL,
        _say(),
        outputs=(".out.segtool-new-",),  # left for the next run to clear (tested elsewhere)
    ),
    Signalled(
        "rasterize --overwrite: SIGTERM just before the swap",
        cmd(*RASTER, "--overwrite"),
        (signal.SIGTERM,),
        PLACE,
        -signal.SIGTERM,
        _say("interrupted"),
        setup=setup_out_exists,
    ),
    Signalled(
        "import-masks -j 2: SIGTERM while the workers convert",
        cmd(*IMPORT[:-2], "-j", "2"),
        (signal.SIGTERM,),
        "segtool.rasterize.import_masks:_convert",
        -signal.SIGTERM,
        _say("interrupted"),
    ),
    Signalled(
        "split -j 2: SIGTERM while the workers count",
        cmd(S, lambda w: w.ds, "-j", "2", "--overwrite"),
        (signal.SIGTERM,),
        "segtool.split.assign:mask_histogram",
        -signal.SIGTERM,
        _say("interrupted"),
    ),
    Signalled(
        "evaluate -j 2: SIGTERM while the workers score",
        cmd(*EVAL[:-2], "-j", "2"),
        (signal.SIGTERM,),
        "segtool.evaluate.report:score_pair",
        -signal.SIGTERM,
        _say("interrupted"),
    ),
    Signalled(
        "predict --overwrite: SIGTERM while images are read",
        cmd(*PREDICT, "--overwrite"),
        (signal.SIGTERM,),
        "segtool.predict.reading:load_rgb",
        -signal.SIGTERM,
        _say("interrupted"),
        setup=setup_out_exists,
    ),
    Signalled(
        "train: SIGTERM after the first epoch is saved leaves a resumable run",
        train_args(OUT, "--epochs", "3", "--workers", "1"),
        (signal.SIGTERM,),
        "segtool.train.trainer:Trainer.save",
        -signal.SIGTERM,
        _say("interrupted", "--resume"),
        when="after",
        check=check_resumable,
        outputs=("out",),
    ),
    Signalled(
        "train --overwrite: SIGHUP during the first epoch keeps the old run",
        train_args(lambda w: w.run, "--overwrite", "--workers", "1"),
        (signal.SIGHUP,),
        "segtool.train.trainer:Trainer.save",
        -signal.SIGHUP,
        _say("interrupted"),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in SIGNALLED])
def test_signalled(case: Signalled, base: Path, tmp_path: Path) -> None:
    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    if case.setup:
        case.setup(world)
    before = snapshot(world.root)
    code, output, children = run_signalled(case, world)
    assert "Traceback" not in output, output
    assert code == case.code, output
    for part in case.says(world):
        assert str(part) in output, f"{part!r} not in:\n{output}"
    assert "error:" not in output, output
    assert not wait_gone(children), f"children outlived segtool: {children}\n{output}"
    if case.signals == (signal.SIGKILL,):  # a kill -9 leaves its temporary folder
        shutil.rmtree(next(world.root.glob(".out.segtool-new-*")))
    check_world(world, before, case.outputs)
    if case.check:
        case.check(world, output)


# --- errors inside workers reach the user as one line ---------------------------------------------


class _Failing:
    """A dataset whose items fail in the worker as a file read would."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise self.exc


@pytest.mark.parametrize(
    "raised, shown",
    [
        (
            SegtoolError("/data/masks/a.png: not a PNG file; re-export it"),
            "error: /data/masks/a.png: not a PNG file; re-export it",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/data/images/b.png"),
            "error: /data/images/b.png: No such file or directory",
        ),
        (
            ValueError("cannot reshape array of size 3 into shape (2,2)"),
            "error: unexpected ValueError: cannot reshape array of size 3 into shape (2,2); run",
        ),
    ],
)
def test_a_loader_workers_error_is_one_line(raised: Exception, shown: str, capsys) -> None:
    from torch.utils.data import DataLoader

    from segtool.cli.common import error_line

    loader = DataLoader(_Failing(raised), batch_size=1, num_workers=1)
    with pytest.raises(type(raised)) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # torch's wrapping, which is undone
    error_line(caught.value)
    err = capsys.readouterr().err
    assert err.startswith(shown) and err.count("\n") == 1, err
    assert "Traceback" not in err and len(err) < 200, err


# --- the swap itself ---------------------------------------------------------------------------


def _folder(path: Path, name: str) -> Path:
    path.mkdir()
    (path / name).write_text(name)
    return path


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_a_new_output_never_replaces_what_appeared(tmp_path, monkeypatch, renameat2):
    """With nothing checked at OUT, the move in refuses anything that appeared there: a
    file, a full folder, even an empty one, by renameat2(RENAME_NOREPLACE) or, where the
    system lacks it, a hard link (files) or a claimed name (folders)."""
    from segtool.core import swap

    if not renameat2:
        monkeypatch.setattr(swap, "_libc_renameat2", lambda: None)
    for kind, make_new in (("file", lambda p: p.write_text("new")), ("folder", _folder)):
        for appeared in ("file", "folder", "empty folder"):
            where = tmp_path / f"{kind}-{appeared}".replace(" ", "-")
            where.mkdir()
            out, tmp = where / "out", where / ".tmp"
            make_new(tmp) if kind == "file" else make_new(tmp, "new")
            if appeared == "file":
                out.write_text("theirs")
            else:
                _folder(out, "theirs") if appeared == "folder" else out.mkdir()
            before = snapshot(where / "out") if out.is_dir() else out.read_text()
            with pytest.raises(swap.SwapConflict, match="appeared") as caught:
                swap.place(tmp, out, None, "--out")
            assert (snapshot(out) if out.is_dir() else out.read_text()) == before
            assert caught.value.kept.exists() and not tmp.exists()
        where = tmp_path / f"{kind}-free"
        where.mkdir()
        make_new(where / ".tmp") if kind == "file" else make_new(where / ".tmp", "new")
        swap.place(where / ".tmp", where / "out", None)
        assert sorted(p.name for p in where.iterdir()) == ["out"]


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_overwrite_replaces_only_the_object_checked(tmp_path, monkeypatch, renameat2):
    from segtool.core import swap

    if not renameat2:
        monkeypatch.setattr(swap, "_libc_renameat2", lambda: None)
    out = _folder(tmp_path / "out", "old")
    seen = swap.identity(out)
    swap.place(_folder(tmp_path / ".new", "new"), out, seen)  # the same object: replaced
    assert [p.name for p in out.iterdir()] == ["new"]
    seen = swap.identity(out)
    (out / "added.txt").write_text("the user's")  # changed since it was checked
    with pytest.raises(swap.SwapConflict, match="changed"):
        swap.place(_folder(tmp_path / ".newer", "newer"), out, seen)
    assert sorted(p.name for p in out.iterdir()) == ["added.txt", "new"]


def test_an_object_put_in_place_after_the_check_is_exchanged_back(tmp_path, monkeypatch):
    """The other program's folder arrives between the last check and the exchange: the
    object that came back is not the one checked, so the two are exchanged back."""
    from segtool.core import swap

    out = _folder(tmp_path / "out", "old")
    seen = swap.identity(out)
    real = swap.identity
    shutil.rmtree(out)
    _folder(out, "theirs")  # a new object at the name after the check...
    calls = []

    def late(path):  # ...that the last look before the exchange does not see yet
        calls.append(path)
        return seen if len(calls) == 1 else real(path)

    monkeypatch.setattr(swap, "identity", late)
    with pytest.raises(swap.SwapConflict) as caught:
        swap.place(_folder(tmp_path / ".new", "new"), out, seen)
    assert [p.name for p in out.iterdir()] == ["theirs"]
    assert [p.name for p in caught.value.kept.iterdir()] == ["new"]


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path):
    from segtool.core.errors import SegtoolError
    from segtool.core.lock import lock_folder

    run = tmp_path / "run"
    run.mkdir()
    code = (
        "import os, sys; from pathlib import Path; from segtool.core.lock import lock_folder;"
        "held = lock_folder(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline() == "held\n"
        named = f"--out {run}: another segtool \\(process {child.pid}\\) is writing this run"
        with pytest.raises(SegtoolError, match=named):
            lock_folder(run, "run")
    finally:
        child.communicate("")  # the first writer ends: its lock goes with it
    with lock_folder(run, "run"):
        pass
    assert list(run.iterdir()) == []  # no lock file left behind
