"""Peak memory of rasterize, evaluate and predict as the folder grows: it must stay flat.

Each command runs as a whole process (``python -m segtool ...``) on a small folder and on one
a hundred (predict: ten) times larger, of the same small files. While it runs, the resident
memory of its whole process tree (the command and its worker processes) is sampled every
20 ms from /proc; the peak of that sum is reported, with the largest single process's peak
(its ``VmHWM``, which the kernel keeps exactly).

    python benchmarks/bench_memory.py [--small 200] [--large 20000]
                                      [--predict-small 200] [--predict-large 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32  #: every image and mask is SIDE x SIDE pixels
VARIANTS = 16  #: distinct files, copied under many names (writing 20,000 files stays fast)
TINY = [
    "--encoder",
    "tu-mobilenetv3_small_050",
    "--decoder-channels",
    "16,8,8,8,8",
    "--size",
    "32",
    "--workers",
    "0",
    "--batch-size",
    "4",
    "--augment",
    "none",
    "--device",
    "cpu",
]


def _png(array: np.ndarray, path: Path) -> bytes:
    Image.fromarray(array).save(path)
    return path.read_bytes()


def _variants(tmp: Path) -> list[tuple[bytes, np.ndarray]]:
    """(image PNG bytes, mask) of `VARIANTS` scenes: a noisy picture with a bright square."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(VARIANTS):
        mask = Image.new("L", (SIDE, SIDE), 0)
        x, y = rng.integers(1, SIDE - 12, 2)
        ImageDraw.Draw(mask).rectangle([x, y, x + 9, y + 9], fill=1)
        m = np.asarray(mask)
        image = np.clip(rng.normal(110, 20, (SIDE, SIDE, 3)) + 100 * m[..., None], 0, 255)
        out.append((_png(image.astype(np.uint8), tmp / f"v{i}.png"), m))
    return out


def make_annotations(folder: Path, n: int, variants) -> None:
    """`n` labelme files, each with its image beside it and one square of class cat."""
    folder.mkdir(parents=True)
    for i in range(n):
        data, mask = variants[i % VARIANTS]
        ys, xs = np.nonzero(mask)
        box = [[int(xs.min()), int(ys.min())], [int(xs.max()), int(ys.max())]]
        shape = {"label": "cat", "points": box, "shape_type": "rectangle", "group_id": None}
        doc = {
            "version": "5.5.0",
            "flags": {},
            "shapes": [{**shape, "flags": {}}],
            "imagePath": f"f{i:05d}.png",
            "imageData": None,
            "imageHeight": SIDE,
            "imageWidth": SIDE,
        }
        (folder / f"f{i:05d}.png").write_bytes(data)
        (folder / f"f{i:05d}.json").write_text(json.dumps(doc))


def make_pairs(root: Path, n: int, variants, tmp: Path) -> None:
    """gt/ and pred/ of `n` masks (the prediction shifted by a pixel), with a classes.json."""
    gt_bytes, pred_bytes = [], []
    for i, (_, mask) in enumerate(variants):
        gt_bytes.append(_png(mask, tmp / f"g{i}.png"))
        pred_bytes.append(_png(np.roll(mask, 1, axis=1), tmp / f"p{i}.png"))
    for folder in ("gt", "pred"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        (root / "gt" / f"m{i:05d}.png").write_bytes(gt_bytes[i % VARIANTS])
        (root / "pred" / f"m{i:05d}.png").write_bytes(pred_bytes[i % VARIANTS])
    classes = {
        "classes": [
            {"id": 0, "name": "_background_", "color": [0, 0, 0]},
            {"id": 1, "name": "cat", "color": [128, 0, 0]},
        ],
        "ignore_index": 255,
    }
    (root / "gt" / "classes.json").write_text(json.dumps(classes))


def make_images(folder: Path, n: int, variants) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"n{i:05d}.png").write_bytes(variants[i % VARIANTS][0])


def _tree(root_pid: int) -> list[int]:
    """`root_pid` and every process below it, now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory line (VmRSS, VmHWM) in KiB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_memory(args: list[str]) -> tuple[float, float, float]:
    """(peak resident memory of the process tree in MiB, the largest single process's own peak
    (VmHWM) in MiB, seconds) of one segtool command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "segtool", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    tree_peak, largest = 0, 0
    while child.poll() is None:
        pids = _tree(child.pid)
        tree_peak = max(tree_peak, sum(_status_kib(p, "VmRSS") for p in pids))
        largest = max([largest, *(_status_kib(p, "VmHWM") for p in pids)])
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"segtool {' '.join(args)} failed:\n{child.stderr.read().decode()}")
    return tree_peak / 1024, largest / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=20_000)
    parser.add_argument("--predict-small", type=int, default=200)
    parser.add_argument("--predict-large", type=int, default=2_000)
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        variants = _variants(tmp)
        # A tiny model for predict, trained once on a small rasterized dataset.
        make_annotations(tmp / "train_ann", 64, variants)
        run = [str(tmp / "train_ann"), str(tmp / "train_ds"), "--jobs", "1"]
        subprocess.run(
            [sys.executable, "-m", "segtool", "rasterize", *run],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "segtool",
                "train",
                str(tmp / "train_ds"),
                "--out",
                str(tmp / "run"),
                "--epochs",
                "1",
                *TINY,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in (opts.small, opts.large):
            make_annotations(tmp / f"ann{n}", n, variants)
            rows.append(
                (
                    "rasterize",
                    n,
                    *peak_memory(
                        ["rasterize", str(tmp / f"ann{n}"), str(tmp / f"ds{n}"), "--images", "none"]
                    ),
                )
            )
            make_pairs(tmp / f"ev{n}", n, variants, tmp)
            rows.append(
                (
                    "evaluate",
                    n,
                    *peak_memory(
                        [
                            "evaluate",
                            str(tmp / f"ev{n}" / "pred"),
                            str(tmp / f"ev{n}" / "gt"),
                            "--out",
                            str(tmp / f"ev{n}" / "out"),
                        ]
                    ),
                )
            )
        for n in (opts.predict_small, opts.predict_large):
            make_images(tmp / f"new{n}", n, variants)
            rows.append(
                (
                    "predict",
                    n,
                    *peak_memory(
                        ["predict", str(tmp / "run"), str(tmp / f"new{n}"), str(tmp / f"pred{n}")]
                    ),
                )
            )
    print(f"{'command':<10} {'files':>7} {'tree peak MiB':>14} {'largest MiB':>12} {'seconds':>8}")
    for command, n, tree, largest, seconds in rows:
        print(f"{command:<10} {n:>7} {tree:>14.0f} {largest:>12.0f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
