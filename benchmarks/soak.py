"""Soak: many rasterize / predict / evaluate runs into shared outputs, stopped by SIGTERM or
SIGINT at random moments; afterwards every output must be the old one or a complete new one,
with nothing temporary left and no process left behind.

A tiny run is trained first (``--encoder tu-resnet10t --size 32 --epochs 1``); then the three
commands take turns, each with ``--overwrite`` into its one shared output. About two runs in
three get a signal (SIGTERM or SIGINT, drawn) after a random part of that command's own
uninterrupted duration. After each run the script checks:

- the exit status: 0, or the signal's (ended by SIGTERM: -15 here, 143 in a shell; Ctrl-C: 130);
- the output: byte for byte the one before the run, or a complete new one (every mask, both
  report files, parseable), never a mix;
- nothing temporary beside the outputs (``.segtool-`` names), no ``not-placed`` result (there
  is no second writer), and no child process of the run still alive.

    python benchmarks/soak.py [--runs 50] [--seed 0] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_IMAGES = 24
SIZE = 48
TINY = [
    "--encoder",
    "tu-resnet10t",
    "--size",
    "32",
    "--epochs",
    "1",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--augment",
    "none",
]


def scene(i: int) -> tuple[np.ndarray, list[dict]]:
    """A noisy image with a bright square and a dark triangle, and their labelme shapes."""
    rng = np.random.default_rng(i)
    x, y = (int(v) for v in rng.integers(2, SIZE - 20, 2))
    tri = [[x + 2, y + 16], [x + 16, y + 16], [x + 9, y + 28]]
    square = [[x, y], [x + 14, y], [x + 14, y + 14], [x, y + 14]]
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(p) for p in square], fill=1)
    draw.polygon([tuple(p) for p in tri], fill=2)
    m = np.asarray(mask)
    base = rng.normal(110, 20, (SIZE, SIZE, 3))
    base[m == 1] += 100
    base[m == 2] -= 80
    shapes = [
        {"label": name, "points": pts, "shape_type": "polygon", "group_id": None, "flags": {}}
        for name, pts in (("square", square), ("triangle", tri))
    ]
    return np.clip(base, 0, 255).astype(np.uint8), shapes


def make_world(root: Path) -> None:
    """ann/ (labelme), labels.txt, new/ (images to predict); then ds/ and a trained run/."""
    (root / "ann").mkdir(parents=True)
    (root / "new").mkdir()
    for i in range(N_IMAGES):
        image, shapes = scene(i)
        Image.fromarray(image).save(root / "ann" / f"a{i:02d}.png")
        Image.fromarray(image).save(root / "new" / f"a{i:02d}.png")
        doc = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": f"a{i:02d}.png",
            "imageData": None,
            "imageHeight": SIZE,
            "imageWidth": SIZE,
        }
        (root / "ann" / f"a{i:02d}.json").write_text(json.dumps(doc))
    (root / "labels.txt").write_text("__ignore__\n_background_\nsquare\ntriangle\n")
    segtool(["rasterize", root / "ann", root / "ds", "--labels", root / "labels.txt"], check=True)
    segtool(["split", root / "ds", "--val", "0.25", "--test", "0"], check=True)
    segtool(["train", root / "ds", "--out", root / "run", *TINY], check=True)


def segtool(args: list, check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "segtool", *map(str, args)], capture_output=True, text=True
    )
    if check and done.returncode:
        raise SystemExit(f"setup failed: {args}\n{done.stderr}")
    return done


def commands(root: Path) -> dict[str, tuple[list, Path]]:
    """Each command's arguments and its shared output."""
    labels = ["--labels", root / "labels.txt"]
    return {
        "rasterize": (["rasterize", root / "ann", root / "out-ds", *labels, "-j", "2"], root / "out-ds"),
        "predict": (["predict", root / "run", root / "new", root / "out-pred"], root / "out-pred"),
        "evaluate": (
            ["evaluate", root / "out-pred", root / "ds" / "masks", "--out", root / "out-eval",
             "--classes", root / "ds" / "classes.json", "-j", "2"],
            root / "out-eval",
        ),
    }  # fmt: skip


def tree(path: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under `path` (or of `path` itself)."""
    if not path.exists():
        return {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def complete(name: str, out: Path) -> bool:
    """Whether `out` is a whole result of `name`."""
    if name == "rasterize":
        masks = list((out / "masks").glob("*.png"))
        return len(masks) == N_IMAGES and _json(out / "rasterize_report.json")
    if name == "predict":
        return len(list(out.glob("*.png"))) == N_IMAGES
    per_image = out / "per_image.csv"
    rows = per_image.read_text().splitlines() if per_image.is_file() else []
    return _json(out / "summary.json") and len(rows) == N_IMAGES + 1


def _json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
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
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def one_run(args: list, delay: float | None, signum: int) -> tuple[int, str, set[int]]:
    """Run segtool; send `signum` after `delay` seconds (None: never). Returns the exit status,
    stderr and every child process seen while it ran."""
    child = subprocess.Popen(
        [sys.executable, "-m", "segtool", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    start = time.monotonic()
    sent = False
    while child.poll() is None:
        seen |= descendants(child.pid)
        if delay is not None and not sent and time.monotonic() - start >= delay:
            child.send_signal(signum)
            sent = True
        time.sleep(0.01)
    return child.returncode, child.stderr.read(), seen


def soak(root: Path, runs: int, seed: int) -> int:
    rng = random.Random(seed)
    table = commands(root)
    names = list(table)
    durations = {}
    for name in names:  # first, one whole run of each: the outputs exist, and how long it takes
        tic = time.monotonic()
        code, err, _ = one_run([*table[name][0], "--overwrite"], None, signal.SIGTERM)
        durations[name] = time.monotonic() - tic
        assert code == 0 and complete(name, table[name][1]), err
    failures, outcomes = [], {"finished": 0, "old kept": 0, "new placed": 0}
    for i in range(runs):
        name = names[i % len(names)]
        args, out = table[name]
        before = tree(out)
        signum = rng.choice([signal.SIGTERM, signal.SIGINT])
        delay = rng.uniform(0, durations[name]) if rng.random() < 2 / 3 else None
        code, err, children = one_run([*args, "--overwrite"], delay, signum)
        after = tree(out)
        # -2: Ctrl-C before segtool's own start (Python's import phase) or after its end (at
        # interpreter exit): Python's own exit by SIGINT, which a shell shows as 130 too.
        expected = {0} if delay is None else {0, -signal.SIGTERM, 130, -signal.SIGINT}
        stray = [p.name for p in root.iterdir() if ".segtool-" in p.name or "not-placed" in p.name]
        stray += [str(p) for p in out.rglob("*") if ".segtool-" in p.name]
        left = [pid for pid in children if alive(pid)]
        whole = after == before or complete(name, out)
        early = code == -signal.SIGINT and "segtool.cli" not in err  # see above
        if code not in expected or not whole or stray or left or ("Traceback" in err and not early):
            failures.append(f"run {i} {name}: exit {code}, whole {whole}, {stray}, {left}: {err}")
        if code == 0:
            outcomes["finished"] += 1
        else:
            outcomes["old kept" if after == before else "new placed"] += 1
        shown = "—" if delay is None else f"{signal.Signals(signum).name} at {delay:.2f}s"
        print(f"{i:3d} {name:<9} {shown:<18} exit {code:>4}  {'ok' if whole else 'BROKEN'}")
    print(f"{runs} runs: {outcomes}; failures: {len(failures)}")
    for failure in failures:
        print(failure)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        if not (root / "run").is_dir():
            make_world(root)
        raise SystemExit(soak(root, args.runs, args.seed))


if __name__ == "__main__":
    main()
