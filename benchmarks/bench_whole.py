"""segtool rasterize and evaluate as a user runs them: whole processes, start-up included.

Three comparisons on synthetic folders, each timed as separate processes launched from here
(interpreter start-up, imports, discovery, the work and the report all count). The folders are
large (2,000 files by default, ``--files``), so that start-up is a small share of the work, as
on a user's dataset:

1. rasterize, 2,000 images 1024x768 with 30 polygons each: a labelme2voc-style script
   (labelme's algorithm: read the JSON, decode the image for its size, one full-size canvas per
   shape, save the palette PNG) against ``segtool rasterize``; masks compared pixel for pixel.
2. the same with 150 polygons each.
3. evaluate, 2,000 prediction/reference pairs 512x512 (``--pair-size``), 5 classes: a
   torchmetrics ``DiceScore`` + ``MeanIoU`` loop against ``segtool evaluate --no-hd95 --no-objects``;
   per-class Dice and IoU compared. The loop's memory grows with every pair it sees (over
   14 GB for 2,000 pairs of 256x256): on a small machine use ``--pair-size 256``.

Each comparison also measures the machine's limit for the job: the start-up of a bare
interpreter that imports what the work needs (json, PIL and zlib-ng; numpy, PIL and zlib-ng),
plus the CPU time one core takes to just decode every JSON and encode every mask with
segtool's PNG settings (rasterize), or to just decode every PNG of the pairs (evaluate),
divided by the cores used; encoding and decoding by the faster of PIL and segtool's own codec
(the limit with PIL's codec is printed too). segtool's time is printed as a multiple of that
limit, in wall time and in CPU time (the limit's CPU time is the start-up's plus the work's on
one core: no process can do less).

segtool's bytecode is compiled first, as installing it does. The machine is shared, so the
sides run interleaved, several rounds, and the best time and the range are printed.

    python benchmarks/bench_whole.py [--rounds 3] [--jobs 2] [--files 2000] [--pair-size 512]
                                     [--cases r30 r150 eval] [--json F]
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1024, 768
LABELS = ["_background_", "road", "car", "person", "sign"]
K = 5
#: segtool's mask PNG settings, for the limit (zlib level 1, run-length strategy).
PNG_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_RLE}

LABELME_SCRIPT = r'''
"""labelme2voc's per-file work, as labelme does it (minus its visualisation output)."""
import json, sys
from pathlib import Path
import numpy as np
import PIL.Image, PIL.ImageDraw

src, out = Path(sys.argv[1]), Path(sys.argv[2])
names = [n.strip() for n in (src / "labels.txt").read_text().splitlines() if n.strip()]
value_of = {n: i - 1 for i, n in enumerate(names)}  # __ignore__ = -1, _background_ = 0
out.mkdir(parents=True, exist_ok=True)

def colormap(n=256):  # imgviz.label_colormap
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap

PALETTE = colormap().flatten()
for path in sorted(src.glob("*.json")):
    data = json.loads(path.read_text())
    img = np.asarray(PIL.Image.open(path.parent / data["imagePath"]))  # labelme decodes it
    cls = np.zeros(img.shape[:2], dtype=np.int32)
    for shape in data["shapes"]:  # labelme.utils.shapes_to_label: one canvas per shape
        canvas = PIL.Image.fromarray(np.zeros(img.shape[:2], dtype=np.uint8))
        PIL.ImageDraw.Draw(canvas).polygon(
            xy=[tuple(p) for p in shape["points"]], outline=1, fill=1
        )
        cls[np.array(canvas, dtype=bool)] = value_of[shape["label"]]
    lbl = PIL.Image.fromarray(cls.astype(np.uint8), mode="P")  # labelme.utils.lblsave
    lbl.putpalette(PALETTE)
    lbl.save(out / f"{path.stem}.png")
'''

TORCHMETRICS_SCRIPT = r'''
"""The loop users write with torchmetrics: read each pair, update DiceScore and MeanIoU."""
import json, sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torchmetrics.segmentation import DiceScore, MeanIoU
pred_dir, ref_dir, k = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dice = DiceScore(num_classes=k, average="none", input_format="index")
miou = MeanIoU(num_classes=k, per_class=True, input_format="index")
for ref_path in sorted(ref_dir.glob("*.png")):
    ref = torch.from_numpy(np.array(Image.open(ref_path))).long()[None]
    pred = torch.from_numpy(np.array(Image.open(pred_dir / ref_path.name))).long()[None]
    dice.update(pred, ref)
    miou.update(pred, ref)
print(json.dumps({"dice": dice.compute().tolist(), "iou": miou.compute().tolist()}))
'''


# --- synthetic folders --------------------------------------------------------------------


def make_annotations(root: Path, n_images: int, n_shapes: int, seed: int = 0) -> None:
    """`n_images` JPEGs with labelme JSONs of `n_shapes` random polygons each, and labels.txt."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = ((xx / WIDTH * 200)[..., None] + (yy / HEIGHT * 50)[..., None] + [0, 30, 60]) % 255
    Image.fromarray(base.astype(np.uint8)).save(root / "frame.jpg", quality=90)
    data = (root / "frame.jpg").read_bytes()
    (root / "frame.jpg").unlink()
    for i in range(n_images):
        (root / f"img_{i:04d}.jpg").write_bytes(data)
        shapes = []
        for _ in range(n_shapes):
            cx, cy = rng.uniform(-50, WIDTH + 50), rng.uniform(-50, HEIGHT + 50)
            n = int(rng.integers(6, 20))
            radius = rng.uniform(10, 160, n)
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            points = [
                [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
                for r, a in zip(radius, angles, strict=True)
            ]
            label = str(rng.choice(LABELS[1:]))
            shapes.append(
                {"label": label, "points": points, "shape_type": "polygon", "group_id": None}
            )
        doc = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": f"img_{i:04d}.jpg",
            "imageData": None,
            "imageHeight": HEIGHT,
            "imageWidth": WIDTH,
        }
        (root / f"img_{i:04d}.json").write_text(json.dumps(doc))
    (root / "labels.txt").write_text("\n".join(["__ignore__", *LABELS]) + "\n")


def _palette() -> list[int]:
    ids = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            cmap[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return cmap.astype(np.uint8).ravel().tolist()


def make_pairs(root: Path, n: int, size: int, seed: int = 0) -> None:
    """Reference masks of random blobs for K classes, predictions that mostly agree, and a
    classes.json beside them (as a segtool dataset has)."""
    rng = np.random.default_rng(seed)
    palette = _palette()
    for folder in ("gt", "pred"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        ref = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(ref)
        for _ in range(12):
            cx, cy, r = [*rng.uniform(0, size, 2).tolist(), rng.uniform(8, size / 6)]
            n_pts = int(rng.integers(5, 12))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n_pts))
            radii = r * rng.uniform(0.6, 1.0, n_pts)
            pts = [
                (cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(radii, angles, strict=True)
            ]
            draw.polygon(pts, fill=int(rng.integers(1, K)))
        ref_arr = np.asarray(ref)
        pred_arr = np.roll(ref_arr, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)).copy()
        noise = rng.random((size, size)) < 0.002
        pred_arr[noise] = rng.integers(0, K, noise.sum())
        for folder, arr in (("gt", ref_arr), ("pred", pred_arr)):
            image = Image.fromarray(arr)
            image.putpalette(palette)
            image.save(root / folder / f"m{i:04d}.png", **PNG_OPTIONS)
    classes = [
        {"id": i, "name": n, "color": palette[3 * i : 3 * i + 3]}
        for i, n in enumerate(["_background_", *(f"c{c}" for c in range(1, K))])
    ]
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": 255}))


# --- running and timing --------------------------------------------------------------------


def segtool_cmd(*args: str) -> list[str]:
    """``python -m segtool ARGS`` (run with `SEGTOOL_PATH` first on the path)."""
    return [sys.executable, "-m", "segtool", *args]


#: The checkout whose segtool runs: this one, or ``--segtool-path`` (to compare two versions).
SEGTOOL_PATH = [str(ROOT)]


def run_process(cmd: list[str], fresh: Path | None = None) -> tuple[float, float, str]:
    """Wall time and CPU time (user + system, worker processes included) of one whole
    process, and its stdout; a failure stops the benchmark. `fresh` is deleted first (outside
    the timer), so every run writes a new output as a first run does."""
    if fresh is not None:
        shutil.rmtree(fresh, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": SEGTOOL_PATH[0]}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, cpu, result.stdout


def startup_seconds(imports: str) -> tuple[float, float]:
    """Wall and CPU time of a bare interpreter that only imports `imports`."""
    return run_process([sys.executable, "-c", f"import {imports}"])[:2]


def _codec():
    """segtool's own label PNG codec (`segtool.core.png`), when the checkout has one."""
    sys.path.insert(0, SEGTOOL_PATH[0])
    try:
        from segtool.core import png
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return png


def rasterize_work_seconds(folder: Path, masks: Path) -> tuple[float, float, float]:
    """One core's time to just decode every JSON and encode every mask with segtool's PNG
    settings: (with PIL's encoder, with segtool's own; inf without one). Both write the same
    pixels at the same compression settings. Third: the time to draw every JSON's polygons
    onto one canvas with PIL (the drawing no mask can do without, which the limit leaves out)."""
    jsons = sorted(folder.glob("*.json"))
    palette = bytes(_palette())
    images, rows = [], []
    for path in jsons:
        with Image.open(masks / f"{path.stem}.png") as mask:
            mask.load()
            images.append(mask)
            pixels = np.asarray(mask)
            padded = np.zeros((pixels.shape[0], pixels.shape[1] + 1), dtype=np.uint8)
            padded[:, 1:] = pixels
            rows.append(padded)
    sink = _NullWriter()
    codec = _codec()
    pil = own = 0.0
    for path, mask, row in zip(jsons, images, rows, strict=True):
        start = time.process_time()
        json.loads(path.read_bytes())
        decoded = time.process_time()
        mask.save(sink, format="PNG", **PNG_OPTIONS)
        saved = time.process_time()
        if codec is not None:
            codec.encode_u8(row.tobytes(), row.shape[1] - 1, row.shape[0], palette, 1)
        encoded = time.process_time()
        pil += saved - start
        own += (decoded - start) + (encoded - saved) if codec is not None else math.inf
    draw = 0.0
    for path in jsons:
        doc = json.loads(path.read_bytes())
        start = time.process_time()
        canvas = Image.new("L", (doc["imageWidth"], doc["imageHeight"]))
        pen = ImageDraw.Draw(canvas)
        for i, shape in enumerate(doc["shapes"]):
            points = [tuple(p) for p in shape["points"]]
            pen.polygon(points, fill=i % 4 + 1, outline=i % 4 + 1)
        draw += time.process_time() - start
    return pil, own, draw


def evaluate_work_seconds(root: Path) -> tuple[float, float]:
    """One core's time to just decode every PNG of the pairs into arrays: (with PIL, with
    segtool's own decoder; inf without one)."""
    files = [f for p in sorted((root / "gt").glob("*.png")) for f in (p, root / "pred" / p.name)]
    start = time.process_time()
    for file in files:
        with Image.open(file) as image:
            np.asarray(image)
    pil = time.process_time() - start
    codec = _codec()
    if codec is None:
        return pil, math.inf
    start = time.process_time()
    for file in files:
        width, height, rows = codec.decode_u8(file.read_bytes())
        np.frombuffer(rows, dtype=np.uint8).reshape(height, width + 1)[:, 1:]
    return pil, time.process_time() - start


class _NullWriter:
    """A file-like object that discards what is written (PNG encoding without the disk)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def _summary(name: str, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    """Print and return one comparison: best-of times, ranges, ratios and limit multiples."""
    ratio = [a / b for a, b in zip(wall["baseline"], wall["segtool"], strict=True)]
    multiple = [s / lim for s, lim in zip(wall["segtool"], wall["limit"], strict=True)]
    row = {
        "case": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "ratio_best": min(wall["baseline"]) / min(wall["segtool"]),
        "ratio_range": [min(ratio), max(ratio)],
        "limit_multiple_best": min(wall["segtool"]) / min(wall["limit"]),
        "limit_multiple_range": [min(multiple), max(multiple)],
        "cpu_limit_multiple_best": min(cpu["segtool"]) / min(cpu["limit"]),
        "pil_limit_multiple_best": min(wall["segtool"]) / min(wall["limit_pil"]),
    }
    if wall.get("limit_draw"):
        row["draw_limit_multiple_best"] = min(wall["segtool"]) / min(wall["limit_draw"])
    print(
        f"{name}\n"
        f"  wall: baseline {_span(wall['baseline'])}  segtool {_span(wall['segtool'])}  "
        f"limit {_span(wall['limit'])}\n"
        f"  cpu:  baseline {_span(cpu['baseline'])}  segtool {_span(cpu['segtool'])}  "
        f"limit {_span(cpu['limit'])}\n"
        f"  ratio {row['ratio_best']:.1f}x best-of (rounds {min(ratio):.1f}-{max(ratio):.1f}x); "
        f"segtool {row['limit_multiple_best']:.2f}x the limit best-of (rounds "
        f"{min(multiple):.2f}-{max(multiple):.2f}x; in CPU time "
        f"{row['cpu_limit_multiple_best']:.2f}x); against the limit with PIL's codec "
        f"({_span(wall['limit_pil'])}) {row['pil_limit_multiple_best']:.2f}x",
        flush=True,
    )
    if "draw_limit_multiple_best" in row:
        print(
            f"  with the drawing added to the limit ({_span(wall['limit_draw'])}): segtool "
            f"{row['draw_limit_multiple_best']:.2f}x",
            flush=True,
        )
    return row


def _span(values: list[float]) -> str:
    return f"{min(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def _record(wall: dict, cpu: dict, side: str, measured: tuple) -> None:
    wall[side].append(measured[0])
    cpu[side].append(measured[1])


def bench_rasterize(tmp: Path, n_images: int, n_shapes: int, rounds: int, jobs: int) -> dict:
    """Baseline, segtool and the limit, interleaved over `rounds`; masks compared once."""
    folder = tmp / f"ann_{n_shapes}"
    make_annotations(folder, n_images, n_shapes)
    ref, seg = tmp / f"ref_{n_shapes}", tmp / f"seg_{n_shapes}"
    seg_args = segtool_cmd(
        "rasterize", str(folder), str(seg), "--labels", str(folder / "labels.txt")
    )
    seg_args += ["--jobs", str(jobs)]
    sides = ("baseline", "segtool", "limit", "limit_pil", "limit_draw")
    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(rounds):
        baseline = [sys.executable, "-c", LABELME_SCRIPT, str(folder), str(ref)]
        _record(wall, cpu, "baseline", run_process(baseline, fresh=ref))
        _record(wall, cpu, "segtool", run_process(seg_args, fresh=seg))
        if i == 0:
            _compare_masks(ref, seg / "masks")
        start_wall, start_cpu = startup_seconds("json, PIL.Image, PIL.PngImagePlugin, zlib_ng")
        pil, own, draw = rasterize_work_seconds(folder, seg / "masks")
        _record(wall, cpu, "limit", (start_wall + min(pil, own) / jobs, start_cpu + min(pil, own)))
        _record(wall, cpu, "limit_pil", (start_wall + pil / jobs, start_cpu + pil))
        drawn = min(pil, own) + draw
        _record(wall, cpu, "limit_draw", (start_wall + drawn / jobs, start_cpu + drawn))
    return _summary(
        f"rasterize, {n_images} images {WIDTH}x{HEIGHT}, {n_shapes} polygons each, {jobs} "
        f"cores (masks pixel-identical)",
        wall,
        cpu,
    )


def _compare_masks(ref: Path, seg: Path) -> None:
    names = sorted(p.name for p in ref.iterdir())
    if names != sorted(p.name for p in seg.iterdir()):
        raise SystemExit(f"MISMATCH: {ref} and {seg} hold different files")
    for name in names:
        a, b = np.asarray(Image.open(ref / name)), np.asarray(Image.open(seg / name))
        if not np.array_equal(a, b):
            raise SystemExit(f"MISMATCH: {name} differs from labelme's")


def bench_evaluate(tmp: Path, n_pairs: int, size: int, rounds: int, jobs: int) -> dict:
    """torchmetrics loop, segtool and the limit, interleaved; scores compared once."""
    root = tmp / "pairs"
    make_pairs(root, n_pairs, size)
    gt, pred, report = str(root / "gt"), str(root / "pred"), root / "report"
    seg_args = segtool_cmd("evaluate", pred, gt, "--no-hd95", "--no-objects", "--out", str(report))
    seg_args += ["--jobs", str(jobs)]
    wall: dict[str, list[float]] = {"baseline": [], "segtool": [], "limit": [], "limit_pil": []}
    cpu: dict[str, list[float]] = {"baseline": [], "segtool": [], "limit": [], "limit_pil": []}
    for i in range(rounds):
        measured = run_process([sys.executable, "-c", TORCHMETRICS_SCRIPT, pred, gt, str(K)])
        _record(wall, cpu, "baseline", measured)
        _record(wall, cpu, "segtool", run_process(seg_args, fresh=report))
        if i == 0:
            theirs = json.loads(measured[2].strip().splitlines()[-1])
            _compare_scores(theirs, report / "summary.json")
        start_wall, start_cpu = startup_seconds("numpy, PIL.Image, PIL.PngImagePlugin, zlib_ng")
        pil, own = evaluate_work_seconds(root)
        _record(wall, cpu, "limit", (start_wall + min(pil, own) / jobs, start_cpu + min(pil, own)))
        _record(wall, cpu, "limit_pil", (start_wall + pil / jobs, start_cpu + pil))
    return _summary(
        f"evaluate --no-hd95 --no-objects, {n_pairs} pairs {size}x{size}, {K} classes, {jobs} cores "
        f"(scores equal)",
        wall,
        cpu,
    )


def _compare_scores(theirs: dict, summary_path: Path) -> None:
    """torchmetrics' defaults average per image (``aggregation_level="samplewise"``; an image
    where a class is absent from both masks is left out): segtool's ``image_mean_dice`` and the
    mean of its per-image IoU. torchmetrics computes in float32; its background entry is left
    out (segtool's per-class table is the foreground classes)."""
    summary = json.loads(summary_path.read_text())
    names = list(summary["per_class"])
    ours = {
        "dice": [summary["per_class"][n]["image_mean_dice"] for n in names],
        "iou": [
            float(
                np.nanmean(
                    [np.nan if r["iou"][n] is None else r["iou"][n] for r in summary["per_image"]]
                )
            )
            for n in names
        ],
    }
    for metric in ("dice", "iou"):
        if not np.allclose(theirs[metric][1:], ours[metric], rtol=1e-6, atol=0):
            raise SystemExit(
                f"MISMATCH: {metric} torchmetrics {theirs[metric][1:]} vs segtool {ours[metric]}"
            )


def main() -> None:
    """Run the chosen comparisons and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cases", nargs="+", default=["r30", "r150", "eval"])
    parser.add_argument("--files", type=int, default=2000, help="annotation files / mask pairs")
    parser.add_argument("--pair-size", type=int, default=512, help="evaluate's masks: S x S")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--segtool-path", help="run the segtool of this checkout instead")
    args = parser.parse_args()
    if args.segtool_path:
        SEGTOOL_PATH[0] = str(Path(args.segtool_path).resolve())
    # An installed segtool has its bytecode compiled (pip does it once, at install); without
    # this, a checkout run under PYTHONDONTWRITEBYTECODE compiles its modules in every timed run.
    compileall.compile_dir(Path(SEGTOOL_PATH[0]) / "segtool", quiet=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            if case == "r30":
                rows.append(bench_rasterize(tmp, args.files, 30, args.rounds, args.jobs))
            elif case == "r150":
                rows.append(bench_rasterize(tmp, args.files, 150, args.rounds, args.jobs))
            elif case == "eval":
                rows.append(bench_evaluate(tmp, args.files, args.pair_size, args.rounds, args.jobs))
            else:
                raise SystemExit(f"unknown case {case!r}; use r30, r150 or eval")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
