"""Hostile and careless use of every command, one table row per situation.

Each row runs one command line through the real CLI (in process, `tests.cli.invoke`) in a fresh
copy of a small world (labelme folder, dataset, trained run, predictions, new images) and asserts:

- the exit code;
- that the output names the file or value at fault (and, for an error, in one ``error:`` line);
- that no traceback appears and no exception escaped;
- that a hash of every pre-existing file and folder is unchanged (for a failure: the whole tree,
  nothing added either; for a success: every pre-existing entry outside the declared outputs);
- that nothing temporary is left behind.

Disk-full and read-only rows use a small tmpfs and run only as root (they skip otherwise).
The world's run is trained once per module (32 px, one epoch, a tiny encoder).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.cli import invoke
from tests.conftest import shape, write_labelme

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["_background_", "square", "disc"]
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
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
TEMP_MARKS = (".segtool-", ".partial-", ".old-", ".tmp")


# --- the world -------------------------------------------------------------------------------


def write_mask(path: Path, mask: np.ndarray) -> None:
    img = Image.fromarray(mask.astype(np.uint8))
    img.putpalette(PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def classes_doc(names: list[str]) -> dict:
    return {
        "classes": [{"id": i, "name": n, "color": [i * 60, 0, 0]} for i, n in enumerate(names)],
        "ignore_index": 255,
    }


def scene(i: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright square (class 1) and a dark disc (class 2), and its mask."""
    rng = np.random.default_rng(i)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x, y = rng.integers(1, size - 12, 2)
    draw.rectangle([x, y, x + 9, y + 9], fill=1)
    cx, cy = rng.integers(5, size - 5, 2)
    draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=2)
    m = np.asarray(mask)
    base = rng.normal(110, 20, (size, size, 3))
    base[m == 1] += 100
    base[m == 2] -= 80
    return np.clip(base, 0, 255).astype(np.uint8), m


def labelme_json(folder: Path, stem: str, label: str = "cat", size=(16, 12)) -> Path:
    """A labelme file with one triangle of `label`, and its PNG image."""
    return write_labelme(folder, stem, [shape(label, [[2, 2], [10, 2], [10, 9]])], size)


def build_dataset(root: Path, n: int = 16) -> Path:
    (root / "images").mkdir(parents=True)
    for i in range(n):
        image, mask = scene(i)
        Image.fromarray(image).save(root / "images" / f"s{i:02d}.png")
        write_mask(root / "masks" / f"s{i:02d}.png", mask)
    (root / "classes.json").write_text(json.dumps(classes_doc(NAMES)))
    stems = [f"s{i:02d}" for i in range(n)]
    split = {"seed": 0, "train": stems[:10], "val": stems[10:13], "test": stems[13:]}
    (root / "split.json").write_text(json.dumps(split))
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The world every row starts from: ann/, labels.txt, ds/, run/, pred/, new/."""
    root = tmp_path_factory.mktemp("world")
    (root / "ann").mkdir()
    for stem in ("a", "b", "c"):
        labelme_json(root / "ann", stem, "cat" if stem != "b" else "dog")
    (root / "labels.txt").write_text("__ignore__\n_background_\ncat\ndog\n")
    build_dataset(root / "ds")
    result = invoke(["train", root / "ds", "--out", root / "run", "--epochs", "1", *TINY])
    assert result.exit_code == 0, result.output
    (root / "pred").mkdir()
    (root / "gt").mkdir()
    shutil.copy(root / "ds" / "classes.json", root / "gt" / "classes.json")
    for stem in ("s13", "s14", "s15"):
        shutil.copy(root / "ds" / "masks" / f"{stem}.png", root / "pred" / f"{stem}.png")
        shutil.copy(root / "ds" / "masks" / f"{stem}.png", root / "gt" / f"{stem}.png")
    (root / "new").mkdir()
    for i in (20, 21):
        Image.fromarray(scene(i)[0]).save(root / "new" / f"n{i}.png")
    return root


@dataclass
class World:
    """Paths of one row's private copy of the world."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / ("labels.txt" if name == "labels" else name)


# --- snapshots -------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> hash of content (files), target (links) or mode (folders)."""
    seen: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[rel] = f"dir:{path.stat().st_mode:o}"
            else:
                seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def leftovers(root: Path) -> list[str]:
    return [
        rel
        for rel in snapshot(root)
        if any(mark in Path(rel).name for mark in TEMP_MARKS) and not rel.endswith(".tmpl")
    ]


# --- tmpfs ---------------------------------------------------------------------------------------


def mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full and read-only cases need root (tmpfs mounts)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    MOUNTS.append(where)


def remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while MOUNTS:
        subprocess.run(["umount", "-l", str(MOUNTS.pop())], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the tmpfs under `folder` until about `leave` bytes are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    if free > leave:
        (folder / "filler").write_bytes(b"\0" * (free - leave))


# --- hostile inputs ----------------------------------------------------------------------------


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels (400 M pixels) in a few kilobytes."""
    raw = zlib.compress(b"".join(b"\0" + b"\0" * ((side + 7) // 8) for _ in range(side)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def corrupt_png(path: Path, seed: int = 1) -> Path:
    """A PNG whose header and IEND are valid but whose pixel data is garbage."""
    image, _ = scene(seed)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 4
    data[start + 2 : start + 200] = bytes(range(198))
    path.write_bytes(bytes(data))
    return path


def deep_json(path: Path, depth: int = 100_000) -> Path:
    path.write_text("[" * depth + "]" * depth)
    return path


def mask_0_255(ds: Path) -> None:
    for mask in sorted((ds / "masks").glob("*.png")):
        array = np.asarray(Image.open(mask))
        Image.fromarray(np.where(array > 0, 255, 0).astype(np.uint8)).save(mask)
    (ds / "classes.json").write_text(json.dumps(classes_doc(["_background_", "fg"])))


# --- the table ------------------------------------------------------------------------------

Args = Callable[[World], list]
Setup = Callable[[World], object]
Check = Callable[[World, object], None]


@dataclass
class Case:
    """One hostile situation."""

    id: str
    args: Args
    code: int
    says: Callable[[World], list[str]]
    setup: Setup | None = None
    check: Check | None = None
    #: paths (relative to the world) a successful row may create or replace
    outputs: tuple[str, ...] = ()
    tmpfs: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _say(*parts: str | Callable[[World], object]) -> Callable[[World], list[str]]:
    return lambda w: [str(p(w)) if callable(p) else p for p in parts]


def rm(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def setup_out_exists(w: World) -> None:
    (w.root / "out").mkdir()
    (w.root / "out" / "keep.txt").write_text("mine")


def chain(*steps: Setup) -> Setup:
    def run(w: World) -> None:
        for step in steps:
            step(w)

    return run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_temp(target: str) -> Setup:
    """A temporary folder left by a killed run (its owner process is gone)."""

    def run(w: World) -> None:
        from segtool.core.swap import temp_name

        tmp = temp_name(w.root / target, "new", dead_pid())
        tmp.mkdir()
        (tmp / "half.png").write_bytes(b"half")

    return run


def check_no_stale(w: World, result) -> None:
    assert not [p for p in w.root.iterdir() if ".segtool-" in p.name]


def check_ids(expected: list[str]) -> Check:
    def run(w: World, result) -> None:
        doc = json.loads((w.root / "out" / "classes.json").read_text())
        assert [c["name"] for c in doc["classes"]] == expected

    return run


def check_masks(n: int) -> Check:
    def run(w: World, result) -> None:
        assert len(list((w.root / "out" / "masks").glob("*.png"))) == n

    return run


def labels_with(text: str) -> Setup:
    return lambda w: (w.root / "labels.txt").write_bytes(text.encode("utf-8"))


def ann_with_label(label: str) -> Setup:
    def run(w: World) -> None:
        labelme_json(w.ann, "a", label)
        w.labels.write_text(f"_background_\n{label}\ndog\ncat\n")

    return run


def ann_doc(stem: str, **changes) -> Setup:
    def run(w: World) -> None:
        path = w.ann / f"{stem}.json"
        doc = json.loads(path.read_text())
        doc.update(changes)
        path.write_text(json.dumps(doc))

    return run


def ann_bomb_file(w: World) -> None:
    bomb_png(w.ann / "a.png")


def ann_bomb_data(w: World) -> None:
    import base64

    png = bomb_png(w.root / "bomb.png").read_bytes()
    (w.root / "bomb.png").unlink()
    ann_doc("a", imageData=base64.b64encode(png).decode(), imageWidth=20000, imageHeight=20000)(w)


def ann_bomb_mask(w: World) -> None:
    import base64

    png = bomb_png(w.root / "bomb.png").read_bytes()
    (w.root / "bomb.png").unlink()
    doc = json.loads((w.ann / "a.json").read_text())
    doc["shapes"].append(
        {
            "label": "cat",
            "points": [[0, 0], [1, 1]],
            "shape_type": "mask",
            "mask": base64.b64encode(png).decode(),
            "group_id": None,
            "flags": {},
        }
    )
    (w.ann / "a.json").write_text(json.dumps(doc))


def ann_gif(w: World) -> None:
    Image.new("RGB", (16, 12)).save(w.ann / "c.gif")
    ann_doc("c", imagePath="c.gif")(w)


def ann_case_collision(w: World) -> None:
    (w.ann / "sub").mkdir()
    labelme_json(w.ann / "sub", "A")


def ann_hidden(w: World) -> None:
    (w.ann / "._a.json").write_bytes(b"\x00\x05\x16\x07AppleDouble garbage")
    (w.ann / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def ds_empty_val(w: World) -> None:
    for p in sorted((w.ds / "images").iterdir())[3:]:
        p.unlink()
    for p in sorted((w.ds / "masks").iterdir())[3:]:
        p.unlink()
    (w.ds / "split.json").unlink()


def ds_hidden(w: World) -> None:
    shutil.copy(w.ds / "images" / "s00.png", w.ds / "images" / "._s00.png")
    (w.ds / "masks" / "._s00.png").write_bytes(b"\x00\x05\x16\x07")
    (w.ds / "images" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def ds_gif(w: World) -> None:
    Image.open(w.ds / "images" / "s00.png").save(w.ds / "images" / "s00.gif")
    (w.ds / "images" / "s00.png").unlink()


def ds_markup_classes(w: World) -> None:
    (w.ds / "classes.json").write_text(json.dumps(classes_doc(["_background_", "[/]", "[bold"])))


def ds_corrupt_image(w: World) -> None:
    corrupt_png(w.ds / "images" / "s01.png", 1)


def run_drop(name: str) -> Setup:
    return lambda w: rm(w.run / name)


def run_write(name: str, data: bytes) -> Setup:
    return lambda w: (w.run / name).write_bytes(data)


def checkpoint_missing_keys(w: World) -> None:
    import torch

    path = w.run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["optimizer"], state["rng"]
    torch.save(state, path)


def run_split_gone(w: World) -> None:
    (w.run / "split.json").unlink()


def new_collide_suffix(w: World) -> None:
    Image.fromarray(scene(20)[0]).save(w.new / "n20.jpg")


def new_collide_case(w: World) -> None:
    Image.fromarray(scene(21)[0]).save(w.new / "N20.PNG")


def new_bomb(w: World) -> None:
    bomb_png(w.new / "nbomb.png")


def new_corrupt(w: World) -> None:
    corrupt_png(w.new / "ncorrupt.png", 3)


def new_hidden(w: World) -> None:
    (w.new / "._n20.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")


def pred_collide_case(w: World) -> None:
    shutil.copy(w.pred / "s13.png", w.pred / "s13.PNG")


def pred_hidden(w: World) -> None:
    (w.pred / "._s13.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")


def pred_abstain(w: World) -> None:
    """Write the ignore value wherever the prediction would be wrong (all of class 1)."""
    for p in sorted(w.pred.glob("*.png")):
        a = np.asarray(Image.open(p)).copy()
        a[a == 1] = 255
        write_mask(p, a)


def check_abstain(w: World, result) -> None:
    summary = json.loads((w.pred / "summary.json").read_text())
    assert summary["per_class"]["square"]["dice"] == 0.0
    assert summary["per_class"]["square"]["fn"] > 0
    assert summary["prediction_ignored"] > 0


def pred_tie(w: World) -> None:
    for p in sorted(w.pred.glob("*.png")):
        write_mask(p, np.zeros((32, 32), np.uint8))


def pred_bomb(w: World) -> None:
    bomb_png(w.pred / "s13.png")


def pred_0_255(w: World) -> None:
    for p in sorted(w.pred.glob("*.png")):
        a = np.asarray(Image.open(p))
        Image.fromarray(np.where(a > 0, 255, 0).astype(np.uint8)).save(p)


def out_symlink_to(target: str) -> Setup:
    return lambda w: (w.root / "out").symlink_to(w.root / target)


def out_parent_file(w: World) -> None:
    (w.root / "file").write_text("not a folder")


def ro_place(w: World) -> None:
    mount_tmpfs(w.root / "ro", "1m")
    (w.root / "ro" / "old").mkdir()
    (w.root / "ro" / "old" / "keep.txt").write_text("mine")
    remount_ro(w.root / "ro")


def full_place(size: str, leave: int, old: bool = True) -> Setup:
    def run(w: World) -> None:
        mount_tmpfs(w.root / "full", size)
        if old:
            (w.root / "full" / "out").mkdir()
            (w.root / "full" / "out" / "keep.txt").write_text("the old output")
        fill(w.root / "full", leave)

    return run


def copy_run_to_full(w: World) -> None:
    mount_tmpfs(w.root / "full", "32m")
    shutil.copytree(w.run, w.root / "full" / "run")
    fill(w.root / "full", 8192)


def ro_run(w: World) -> None:
    mount_tmpfs(w.root / "ro", "16m")
    shutil.copytree(w.run, w.root / "ro" / "run")
    remount_ro(w.root / "ro")


def resume_other_dataset(w: World) -> None:
    build_dataset(w.root / "ds2", n=16)
    image = np.asarray(Image.open(w.root / "ds2" / "images" / "s00.png")).copy()
    image[0, 0] = 0
    Image.fromarray(image).save(w.root / "ds2" / "images" / "s00.png")


def interrupted_epoch1(w: World) -> None:
    rm(w.run / "checkpoints")


def evaluate_out_exists(w: World) -> None:
    (w.root / "eo").mkdir()
    (w.root / "eo" / "summary.json").write_text('{"mine": true}')


def evaluate_user_predictions(w: World) -> None:
    (w.root / "eo" / "predictions").mkdir(parents=True)
    (w.root / "eo" / "predictions" / "precious.png").write_bytes(b"user data")


R, S, T, P, E, X = "rasterize", "split", "train", "predict", "evaluate", "export"
LBL = ["--labels", lambda w: w.labels]


def images_apart(w: World) -> None:
    """data/pics/ holds an image and the user's notes; exp/c.json (COCO) and ann2/p.json
    (labelme, imagePath ../data/pics/p.png) read that image from outside their own folder."""
    pics = w.root / "data" / "pics"
    pics.mkdir(parents=True)
    Image.fromarray(scene(3)[0]).save(pics / "p.png")
    (pics / "notes.txt").write_text("mine")
    coco = {
        "images": [{"id": 1, "file_name": "p.png", "width": 32, "height": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 20, 2, 9, 20]]}
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (w.root / "exp").mkdir()
    (w.root / "exp" / "c.json").write_text(json.dumps(coco))
    (w.root / "ann2").mkdir()
    write_labelme(w.root / "ann2", "p", [shape("cat", [[2, 2], [10, 2], [10, 9]])], (32, 32))
    doc = json.loads((w.root / "ann2" / "p.json").read_text())
    doc["imagePath"] = "../data/pics/p.png"
    (w.root / "ann2" / "p.json").write_text(json.dumps(doc))
    (w.root / "ann2" / "p.png").unlink()


def cmd(*parts) -> Args:
    return lambda w: [p(w) if callable(p) else p for p in parts]


def train_args(out: Callable[[World], Path], *more) -> Args:
    return cmd(T, lambda w: w.ds, "--out", out, "--epochs", "1", *TINY, *more)


def eval_model(*more) -> Args:
    split = () if "--split" in more else ("--split", "test")
    return cmd(E, "--model", lambda w: w.run, lambda w: w.ds, "--no-hd95", *split, *more)


CASES = [
    # --- rasterize ---------------------------------------------------------------------------
    Case(
        "rasterize: OUT is the annotations folder",
        cmd(R, lambda w: w.ann, lambda w: w.ann, *LBL, "--overwrite"),
        1,
        _say("annotations folder", lambda w: w.ann),
    ),
    Case(
        "rasterize: OUT contains the annotations folder",
        cmd(R, lambda w: w.ann, lambda w: w.root, *LBL, "--overwrite"),
        1,
        _say("contains", lambda w: w.ann),
    ),
    Case(
        "rasterize: OUT lies inside the annotations folder",
        cmd(R, lambda w: w.ann, lambda w: w.ann / "ds", *LBL),
        1,
        _say("lies inside", lambda w: w.ann),
    ),
    Case(
        "rasterize: OUT reaches the annotations through ..",
        cmd(R, lambda w: w.ann, lambda w: w.root / "ds" / ".." / "ann", *LBL, "--overwrite"),
        1,
        _say("annotations folder"),
    ),
    Case(
        "rasterize: OUT is a symlink to the annotations",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL, "--overwrite"),
        1,
        _say("annotations folder"),
        setup=out_symlink_to("ann"),
    ),
    Case(
        "rasterize: OUT is a symlink elsewhere",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL, "--overwrite"),
        1,
        _say("symbolic link", lambda w: w.root / "out"),
        setup=out_symlink_to("new"),
    ),
    Case(
        "rasterize: OUT exists, no --overwrite",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("already exists", "--overwrite"),
        setup=setup_out_exists,
    ),
    Case(
        "rasterize: --overwrite with an invalid file keeps the old output",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL, "--overwrite"),
        1,
        _say("b.json"),
        setup=chain(setup_out_exists, lambda w: (w.ann / "b.json").write_text("{oops")),
    ),
    Case(
        "rasterize: parent of OUT is a file",
        cmd(R, lambda w: w.ann, lambda w: w.root / "file" / "out", *LBL),
        1,
        _say(lambda w: w.root / "file"),
        setup=out_parent_file,
    ),
    Case(
        "rasterize: annotations folder missing",
        cmd(R, lambda w: w.root / "nope", lambda w: w.root / "out", *LBL),
        1,
        _say("nope"),
    ),
    Case(
        "rasterize: labels.txt with a UTF-8 byte-order mark",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        0,
        _say("masks written"),
        setup=labels_with("\ufeff__ignore__\n_background_\ncat\ndog\n"),
        check=check_ids(["_background_", "cat", "dog"]),
        outputs=("out",),
    ),
    Case(
        "rasterize: labels.txt with an invisible character",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("labels.txt", "line 3"),
        setup=labels_with("__ignore__\n_background_\ncat\u200b\ndog\n"),
    ),
    Case(
        "rasterize: label with rich markup",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        0,
        _say("[/]"),
        setup=ann_with_label("[/]"),
        outputs=("out",),
    ),
    Case(
        "rasterize: deeply nested JSON",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("deep.json"),
        setup=lambda w: deep_json(w.ann / "deep.json"),
    ),
    Case(
        "rasterize: decompression bomb image file",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("a.png", "--max-pixels"),
        setup=ann_bomb_file,
    ),
    Case(
        "rasterize: decompression bomb in imageData",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("a.json", "--max-pixels"),
        setup=ann_bomb_data,
    ),
    Case(
        "rasterize: decompression bomb in a mask shape",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("a.json", "--max-pixels"),
        setup=ann_bomb_mask,
    ),
    Case(
        "rasterize: image in a format the dataset does not read (.gif)",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("c.gif"),
        setup=ann_gif,
    ),
    Case(
        "rasterize: two annotations whose stems differ only in case",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        1,
        _say("A.json", "a.json"),
        setup=ann_case_collision,
    ),
    Case(
        "rasterize: hidden files (._a.json, .DS_Store) are not data",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        0,
        _say("3 masks written"),
        setup=ann_hidden,
        check=check_masks(3),
        outputs=("out",),
    ),
    Case(
        "rasterize: temporary folder of a killed run is cleared",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL),
        0,
        _say("masks written"),
        setup=stale_temp("out"),
        check=check_no_stale,
        outputs=("out", ".out.segtool-"),
    ),
    Case(
        "rasterize: --max-pixels not a number",
        cmd(R, lambda w: w.ann, lambda w: w.root / "out", *LBL, "--max-pixels", "lots"),
        2,
        _say("--max-pixels"),
    ),
    Case(
        "rasterize: read-only destination",
        cmd(R, lambda w: w.ann, lambda w: w.root / "ro" / "old", *LBL, "--overwrite"),
        1,
        _say(lambda w: w.root / "ro"),
        setup=ro_place,
        tmpfs=True,
    ),
    Case(
        "rasterize: disk full keeps the old output",
        cmd(R, lambda w: w.ann, lambda w: w.root / "full" / "out", *LBL, "--overwrite"),
        1,
        _say("disk is full"),
        setup=full_place("64k", 4096),
        tmpfs=True,
    ),
    Case(
        "rasterize: OUT is the --image-dir of an export (--overwrite)",
        cmd(
            R,
            lambda w: w.root / "exp" / "c.json",
            lambda w: w.root / "data" / "pics",
            "--image-dir",
            lambda w: w.root / "data" / "pics",
            "--overwrite",
        ),
        1,
        _say("is the image folder", lambda w: w.root / "data" / "pics"),
        setup=images_apart,
    ),
    Case(
        "rasterize: OUT contains an export's --image-dir (--overwrite)",
        cmd(
            R,
            lambda w: w.root / "exp" / "c.json",
            lambda w: w.root / "data",
            "--image-dir",
            lambda w: w.root / "data" / "pics",
            "--overwrite",
        ),
        1,
        _say("contains the image folder", lambda w: w.root / "data" / "pics"),
        setup=images_apart,
    ),
    Case(
        "rasterize: OUT is the folder labelme's imagePath points into (--overwrite)",
        cmd(R, lambda w: w.root / "ann2", lambda w: w.root / "data" / "pics", "--overwrite"),
        1,
        _say("is the images folder", "pics"),
        setup=images_apart,
    ),
    Case(
        "rasterize: OUT inside an export's image folder is fine",
        cmd(
            R,
            lambda w: w.root / "exp" / "c.json",
            lambda w: w.root / "data" / "pics" / "ds",
            "--image-dir",
            lambda w: w.root / "data" / "pics",
        ),
        0,
        _say("1 masks written"),
        outputs=("data/pics/ds",),
        setup=images_apart,
    ),
    # --- split -------------------------------------------------------------------------------
    Case("split: --val nan", cmd(S, lambda w: w.ds, "--val", "nan", "--overwrite"), 1, _say("nan")),
    Case(
        "split: --val -0.1", cmd(S, lambda w: w.ds, "--val", "-0.1", "--overwrite"), 1, _say("-0.1")
    ),
    Case(
        "split: fractions sum past 1",
        cmd(S, lambda w: w.ds, "--val", "0.6", "--test", "0.5", "--overwrite"),
        1,
        _say("0.6", "0.5"),
    ),
    Case(
        "split: split.json exists, no --overwrite",
        cmd(S, lambda w: w.ds),
        1,
        _say("split.json", "--overwrite"),
    ),
    Case(
        "split: split.json is a folder",
        cmd(S, lambda w: w.ds, "--overwrite"),
        1,
        _say("split.json"),
        setup=lambda w: ((w.ds / "split.json").unlink(), (w.ds / "split.json").mkdir()),
    ),
    Case(
        "split: split.json is a symlink",
        cmd(S, lambda w: w.ds, "--overwrite"),
        1,
        _say("symbolic link"),
        setup=lambda w: (
            (w.ds / "split.json").rename(w.root / "elsewhere.json"),
            (w.ds / "split.json").symlink_to(w.root / "elsewhere.json"),
        ),
    ),
    Case("split: no dataset", cmd(S, lambda w: w.root / "nope"), 1, _say("nope")),
    Case(
        "split: 0/255 binary masks made elsewhere",
        cmd(S, lambda w: w.ds, "--overwrite"),
        1,
        _say("255", "import-masks"),
        setup=lambda w: mask_0_255(w.ds),
    ),
    Case(
        "split: a split left empty on a tiny dataset",
        cmd(S, lambda w: w.ds, "--val", "0.1", "--test", "0.1"),
        0,
        _say("val", "empty", "--val"),
        setup=ds_empty_val,
        outputs=("ds/split.json",),
    ),
    Case(
        "split: hidden files (._s00.png, .DS_Store) are not data",
        cmd(S, lambda w: w.ds, "--overwrite"),
        0,
        _say("seed 0"),
        setup=ds_hidden,
        outputs=("ds/split.json",),
    ),
    Case(
        "split: an image in a format segtool does not read (.gif)",
        cmd(S, lambda w: w.ds, "--overwrite"),
        0,
        _say("s00.gif"),
        setup=ds_gif,
        outputs=("ds/split.json",),
    ),
    Case(
        "split: malformed classes.json",
        cmd(S, lambda w: w.ds, "--overwrite"),
        1,
        _say("classes.json"),
        setup=lambda w: (w.ds / "classes.json").write_text('{"classes": [}'),
    ),
    Case(
        "split: class names with rich markup",
        cmd(S, lambda w: w.ds, "--overwrite"),
        0,
        _say("[/]", "[bold"),
        setup=ds_markup_classes,
        outputs=("ds/split.json",),
    ),
    Case(
        "split: read-only dataset",
        cmd(S, lambda w: w.root / "ro" / "ds", "--overwrite"),
        1,
        _say(lambda w: w.root / "ro"),
        setup=lambda w: (
            mount_tmpfs(w.root / "ro", "4m"),
            shutil.copytree(w.ds, w.root / "ro" / "ds"),
            remount_ro(w.root / "ro"),
        ),
        tmpfs=True,
    ),
    # --- train -------------------------------------------------------------------------------
    Case(
        "train: --out is the dataset (with --overwrite)",
        train_args(lambda w: w.ds, "--overwrite"),
        1,
        _say("dataset", lambda w: w.ds),
    ),
    Case(
        "train: --out contains the dataset (with --overwrite)",
        train_args(lambda w: w.root, "--overwrite"),
        1,
        _say("contains", lambda w: w.ds),
    ),
    Case(
        "train: --out lies inside the dataset's images",
        train_args(lambda w: w.ds / "images" / "run"),
        1,
        _say("lies inside", lambda w: w.ds),
    ),
    Case(
        "train: --overwrite with an invalid option keeps the old run",
        train_args(lambda w: w.run, "--overwrite", "--decoder-channels", "0,0"),
        1,
        _say("0,0"),
    ),
    Case(
        "train: --overwrite with an unknown encoder keeps the old run",
        cmd(T, lambda w: w.ds, "--out", lambda w: w.run, "--overwrite", "--encoder", "resnet19"),
        1,
        _say("resnet19"),
    ),
    Case(
        "train: --out exists, neither --resume nor --overwrite",
        train_args(lambda w: w.run),
        1,
        _say(lambda w: w.run, "--overwrite"),
    ),
    Case(
        "train: --out is a symlink to another run",
        train_args(lambda w: w.root / "out", "--overwrite"),
        1,
        _say("symbolic link"),
        setup=out_symlink_to("run"),
    ),
    Case(
        "train: parent of --out is a file",
        train_args(lambda w: w.root / "file" / "run"),
        1,
        _say(lambda w: w.root / "file"),
        setup=out_parent_file,
    ),
    Case(
        "train: --resume on a different dataset",
        cmd(T, lambda w: w.root / "ds2", "--out", lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say("--resume", "dataset", lambda w: w.root / "ds2"),
        setup=resume_other_dataset,
    ),
    Case(
        "train: --resume of a run stopped in epoch 1 (no circular advice)",
        cmd(T, lambda w: w.ds, "--out", lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say("last.pt", "--overwrite"),
        setup=interrupted_epoch1,
    ),
    Case(
        "train: --resume with a garbage checkpoint",
        cmd(T, lambda w: w.ds, "--out", lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say("last.pt"),
        setup=run_write("checkpoints/last.pt", b"garbage"),
    ),
    Case(
        "train: --resume with a checkpoint missing keys",
        cmd(T, lambda w: w.ds, "--out", lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say("last.pt", "optimizer"),
        setup=checkpoint_missing_keys,
    ),
    Case(
        "train: --resume with a corrupt metrics.csv",
        cmd(T, lambda w: w.ds, "--out", lambda w: w.run, "--resume", "--epochs", "2"),
        1,
        _say("metrics.csv"),
        setup=run_write("metrics.csv", b"epoch,train_loss\n1,\x00\x00zz,9,9,9\n"),
    ),
    Case(
        "train: --val nan",
        train_args(lambda w: w.root / "r", "--val", "nan"),
        1,
        _say("--val", "nan"),
        setup=lambda w: (w.ds / "split.json").unlink(),
    ),
    Case(
        "train: malformed --split-file",
        train_args(lambda w: w.root / "r", "--split-file", lambda w: w.root / "bad.json"),
        1,
        _say("bad.json"),
        setup=lambda w: (w.root / "bad.json").write_text("[" * 50_000),
    ),
    Case(
        "train: 0/255 binary masks made elsewhere",
        train_args(lambda w: w.root / "r"),
        1,
        _say("255", "import-masks"),
        setup=lambda w: mask_0_255(w.ds),
    ),
    Case(
        "train: a split.json whose val list is empty",
        train_args(lambda w: w.root / "r"),
        1,
        _say("val split is empty", "--val"),
        setup=lambda w: (w.ds / "split.json").write_text(
            json.dumps(
                {"seed": 0, "train": [f"s{i:02d}" for i in range(16)], "val": [], "test": []}
            )
        ),
    ),
    Case(
        "train: corrupt image data behind a valid header",
        train_args(lambda w: w.root / "r"),
        1,
        _say("s01.png"),
        setup=ds_corrupt_image,
    ),
    Case(
        "train: class names with rich markup",
        train_args(lambda w: w.root / "r"),
        0,
        _say("[/]", "[bold"),
        setup=ds_markup_classes,
        outputs=("r",),
    ),
    Case(
        "train: --encoder-weights imagenet without a network",
        train_args(lambda w: w.root / "r", "--encoder-weights", "imagenet"),
        1,
        _say("imagenet", "local"),
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "train: read-only --out",
        train_args(lambda w: w.root / "ro" / "run", "--overwrite"),
        1,
        _say(lambda w: w.root / "ro"),
        setup=ro_run,
        tmpfs=True,
    ),
    Case(
        "train: a disk without room for the checkpoints keeps the old run",
        train_args(lambda w: w.root / "full" / "run", "--overwrite"),
        1,
        _say(lambda w: f"{w.root / 'full' / 'run'}: 0 MB free on its disk", "pass --out"),
        setup=copy_run_to_full,
        tmpfs=True,
    ),
    Case(
        "train: temporary run of a killed training is cleared",
        train_args(lambda w: w.root / "r"),
        0,
        _say("best epoch"),
        setup=stale_temp("r"),
        check=check_no_stale,
        outputs=("r", ".r.segtool-"),
    ),
    # --- predict -------------------------------------------------------------------------------
    Case(
        "predict: OUT is the images folder (with --overwrite)",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.new, "--overwrite"),
        1,
        _say("images folder", lambda w: w.new),
    ),
    Case(
        "predict: OUT is the run (with --overwrite)",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.run, "--overwrite"),
        1,
        _say(lambda w: w.run),
    ),
    Case(
        "predict: OUT contains the images folder",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root, "--overwrite"),
        1,
        _say("contains", lambda w: w.new),
    ),
    Case(
        "predict: OUT lies inside the run's model",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.run / "model" / "x"),
        1,
        _say("lies inside"),
    ),
    Case(
        "predict: OUT exists, no --overwrite",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("already exists"),
        setup=setup_out_exists,
    ),
    Case(
        "predict: OUT is a symlink",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out", "--overwrite"),
        1,
        _say("symbolic link"),
        setup=out_symlink_to("pred"),
    ),
    Case(
        "predict: parent of OUT is a file",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "file" / "o"),
        1,
        _say(lambda w: w.root / "file"),
        setup=out_parent_file,
    ),
    Case(
        "predict: images differ only in suffix (n20.png, n20.jpg)",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("n20.jpg", "n20.png"),
        setup=new_collide_suffix,
    ),
    Case(
        "predict: images differ only in case (n20.png, N20.PNG)",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("N20.PNG", "n20.png"),
        setup=new_collide_case,
    ),
    Case(
        "predict: a decompression bomb among good images",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out", "--skip-invalid"),
        0,
        _say("nbomb.png", "--max-pixels"),
        setup=new_bomb,
        check=lambda w, r: (
            sorted(p.name for p in (w.root / "out").glob("*.png")) == ["n20.png", "n21.png"]
        ),
        outputs=("out",),
    ),
    Case(
        "predict: a decompression bomb without --skip-invalid",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("nbomb.png"),
        setup=new_bomb,
    ),
    Case(
        "predict: corrupt image data among good images",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("ncorrupt.png"),
        setup=new_corrupt,
    ),
    Case(
        "predict: hidden files are not images",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        0,
        _say("2 masks written"),
        setup=new_hidden,
        outputs=("out",),
    ),
    Case(
        "predict: malformed run config.json",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("config.json"),
        setup=run_write("config.json", b"{not json"),
    ),
    Case(
        "predict: run without a model",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out"),
        1,
        _say("model"),
        setup=run_drop("model"),
    ),
    # --- export --------------------------------------------------------------------------------
    Case(
        "export: OUT is the run (with --overwrite)",
        cmd(X, lambda w: w.run, lambda w: w.run, "--overwrite"),
        1,
        _say("is the run", lambda w: w.run),
    ),
    Case(
        "export: OUT lies inside the run",
        cmd(X, lambda w: w.run, lambda w: w.run / "exported"),
        1,
        _say("lies inside the run"),
    ),
    Case(
        "export: OUT contains the run (with --overwrite)",
        cmd(X, lambda w: w.run, lambda w: w.run.parent, "--overwrite"),
        1,
        _say("contains the run"),
    ),
    Case(
        "export: OUT exists, no --overwrite",
        cmd(X, lambda w: w.run, lambda w: w.root / "out"),
        1,
        _say("already exists"),
        setup=setup_out_exists,
    ),
    Case(
        "export: OUT is the check images (with --overwrite)",
        cmd(X, lambda w: w.run, lambda w: w.new, "--check-images", lambda w: w.new, "--overwrite"),
        1,
        _say("is the check images", lambda w: w.new),
    ),
    Case(
        "export: run without a model",
        cmd(X, lambda w: w.run, lambda w: w.root / "out"),
        1,
        _say("no trained model"),
        setup=run_drop("model"),
    ),
    Case(
        "predict: --backend onnxruntime with a run that has no export",
        cmd(
            P,
            lambda w: w.run,
            lambda w: w.new,
            lambda w: w.root / "out",
            "--backend",
            "onnxruntime",
        ),
        1,
        _say("no exported model here", lambda w: w.run),
    ),
    Case(
        "predict: --overlap 1.5",
        cmd(
            P,
            lambda w: w.run,
            lambda w: w.new,
            lambda w: w.root / "out",
            "--overlap",
            "1.5",
            "--tile",
            "64",
        ),
        1,
        _say("1.5"),
    ),
    Case(
        "predict: --threshold 2",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out", "--threshold", "2"),
        1,
        _say("--threshold", "2"),
    ),
    Case(
        "predict: --split val of a run without split.json",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "out", "--split", "val"),
        1,
        _say("split.json"),
        setup=run_split_gone,
    ),
    Case(
        "predict: read-only OUT",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "ro" / "old", "--overwrite"),
        1,
        _say(lambda w: w.root / "ro"),
        setup=ro_place,
        tmpfs=True,
    ),
    Case(
        "predict: disk full keeps the old output",
        cmd(P, lambda w: w.run, lambda w: w.new, lambda w: w.root / "full" / "out", "--overwrite"),
        1,
        _say("disk is full"),
        setup=full_place("64k", 4096),
        tmpfs=True,
    ),
    # --- evaluate -------------------------------------------------------------------------------
    Case(
        "evaluate: summary.json exists in --out, no --overwrite",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", lambda w: w.root / "eo"),
        1,
        _say("summary.json", "--overwrite"),
        setup=evaluate_out_exists,
    ),
    Case(
        "evaluate: --overwrite replaces summary.json",
        cmd(
            E,
            lambda w: w.pred,
            lambda w: w.gt,
            "--out",
            lambda w: w.root / "eo",
            "--overwrite",
        ),
        0,
        _say("square"),
        setup=evaluate_out_exists,
        outputs=("eo/summary.json", "eo/per_image.csv", "eo/confusion.csv", "eo/confusion.png"),
    ),
    Case(
        "evaluate: --compare --out is the references folder",
        cmd(
            E,
            "--compare",
            lambda w: w.pred,
            lambda w: w.pred,
            lambda w: w.gt,
            "--out",
            lambda w: w.gt,
            "--overwrite",
        ),
        1,
        _say(lambda w: w.gt),
    ),
    Case(
        "evaluate: --compare summary.json exists in --out, no --overwrite",
        cmd(
            E,
            "--compare",
            lambda w: w.pred,
            lambda w: w.pred,
            lambda w: w.gt,
            "--out",
            lambda w: w.root / "eo",
        ),
        1,
        _say("summary.json", "--overwrite"),
        setup=evaluate_out_exists,
    ),
    Case(
        "evaluate: --model --out whose predictions/ holds the user's files",
        eval_model("--out", lambda w: w.root / "eo"),
        1,
        _say("predictions", "--overwrite"),
        setup=evaluate_user_predictions,
    ),
    Case(
        "evaluate: --model --out is the dataset's images folder",
        eval_model("--out", lambda w: w.ds / "images", "--overwrite"),
        1,
        _say("images", lambda w: w.ds / "images"),
    ),
    Case(
        "evaluate: --model --out is the dataset's masks",
        eval_model("--out", lambda w: w.ds / "masks", "--overwrite"),
        1,
        _say(lambda w: w.ds),
    ),
    Case(
        "evaluate: --model --split all on a run without split.json",
        eval_model("--split", "all"),
        1,
        _say("split.json", "all"),
        setup=run_split_gone,
    ),
    Case(
        "evaluate: predictions abstain with the ignore value",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--no-hd95"),
        0,
        _say("square"),
        setup=pred_abstain,
        check=check_abstain,
        outputs=(
            "pred/summary.json",
            "pred/per_image.csv",
            "pred/confusion.csv",
            "pred/confusion.png",
        ),
    ),
    Case(
        "evaluate: predictions differ only in suffix case (s13.png, s13.PNG)",
        cmd(E, lambda w: w.pred, lambda w: w.gt),
        1,
        _say("s13.PNG", "s13.png"),
        setup=pred_collide_case,
    ),
    Case(
        "evaluate: hidden files among predictions",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--no-hd95"),
        0,
        _say("3 images"),
        setup=pred_hidden,
        outputs=(
            "pred/summary.json",
            "pred/per_image.csv",
            "pred/confusion.csv",
            "pred/confusion.png",
        ),
    ),
    Case(
        "evaluate: gallery when the worst images tie",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--no-hd95", "--gallery", "3"),
        0,
        _say("gallery"),
        setup=pred_tie,
        outputs=(
            "pred/summary.json",
            "pred/per_image.csv",
            "pred/confusion.csv",
            "pred/confusion.png",
            "pred/gallery",
        ),
    ),
    Case(
        "evaluate: class names with rich markup",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--no-hd95"),
        0,
        _say("[/]", "[bold"),
        setup=lambda w: (w.gt / "classes.json").write_text(
            json.dumps(classes_doc(["_background_", "[/]", "[bold"]))
        ),
        outputs=(
            "pred/summary.json",
            "pred/per_image.csv",
            "pred/confusion.csv",
            "pred/confusion.png",
        ),
    ),
    Case(
        "evaluate: a decompression bomb among the predictions",
        cmd(E, lambda w: w.pred, lambda w: w.gt),
        1,
        _say("s13.png"),
        setup=pred_bomb,
    ),
    Case(
        "evaluate: 0/255 predictions",
        cmd(E, lambda w: w.pred, lambda w: w.gt),
        1,
        _say("255"),
        setup=pred_0_255,
    ),
    Case(
        "evaluate: summary.json in --out is a symlink to an input",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", lambda w: w.root / "eo", "--overwrite"),
        1,
        _say("symbolic link"),
        setup=lambda w: (
            (w.root / "eo").mkdir(),
            (w.root / "eo" / "summary.json").symlink_to(w.gt / "s13.png"),
        ),
    ),
    Case(
        "evaluate: parent of --out is a file",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", lambda w: w.root / "file/o"),
        1,
        _say(lambda w: w.root / "file"),
        setup=out_parent_file,
    ),
    Case(
        "evaluate: malformed classes.json",
        cmd(E, lambda w: w.pred, lambda w: w.gt),
        1,
        _say("classes.json"),
        setup=lambda w: deep_json(w.gt / "classes.json"),
    ),
    Case(
        "evaluate: --model with a malformed run config.json",
        eval_model(),
        1,
        _say("config.json"),
        setup=run_write("config.json", b"[" * 50_000),
    ),
    Case(
        "evaluate: read-only --out",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", lambda w: w.root / "ro" / "o"),
        1,
        _say(lambda w: w.root / "ro"),
        setup=ro_place,
        tmpfs=True,
    ),
    Case(
        "evaluate: disk full keeps the old summary",
        cmd(
            E,
            lambda w: w.pred,
            lambda w: w.gt,
            "--out",
            lambda w: w.root / "full" / "out",
            "--gallery",
            "3",
            "--overwrite",
        ),
        1,
        _say("disk is full"),
        setup=full_place("64k", 2048),
        tmpfs=True,
    ),
]

#: Rows known to fail (marked xfail, strict: a fixed row must leave the list). Empty since
#: issue 8; the rows that failed before it are listed in its closing note.
FAILING: set[str] = set()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason="issue 8")] if case.id in FAILING else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_hostile(case: Case, base: Path, tmp_path: Path, monkeypatch) -> None:
    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if "HF_HUB_OFFLINE" in case.env:  # read once at import: make sure nothing is downloaded
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if case.setup:
        case.setup(world)
    before = snapshot(world.root)
    args = case.args(world)
    result = invoke(args)
    output = result.output
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"exception escaped: {escaped!r}\n{output}"
    assert "Traceback" not in output, output
    assert result.exit_code == case.code, output
    for part in case.says(world):
        assert part in output, f"{part!r} not in:\n{output}"
    if case.code == 1:
        assert output.count("error:") == 1, output
    after = snapshot(world.root)
    owned = tuple(case.outputs) or ("\0",)
    changed = sorted(
        rel
        for rel in set(before) | set(after)
        if before.get(rel) != after.get(rel) and not rel.startswith(owned)
    )
    assert not changed, f"changed outside the declared outputs: {changed[:10]}"
    if case.code != 0 and not case.outputs:
        assert after == before
    assert not leftovers(world.root), leftovers(world.root)
    if case.check:
        assert case.check(world, result) is not False


def test_enough_situations():
    commands = {c.id.split(":")[0] for c in CASES}
    assert commands == {"rasterize", "split", "train", "predict", "evaluate", "export"}
    assert len(CASES) >= 60


# --- the output mechanism itself: kill -9 at the worst moments ------------------------------------

KILL_SCRIPT = """
import sys, time
from pathlib import Path
from segtool.core.files import OutputPlan
out = Path(sys.argv[1])
plan = OutputPlan(overwrite=True)
target = plan.write(out, folder=True, option="OUT")
with plan.build():
    (target.tmp / "new.txt").write_text("half")
    print("building", flush=True)
    time.sleep(60)
"""


def _killed_while_building(out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline().strip() == "building"
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_kill_9_while_building_keeps_the_old_output_and_next_run_clears(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    _killed_while_building(out)
    assert (out / "old.txt").read_text() == "old" and not (out / "new.txt").exists()
    assert [p for p in tmp_path.iterdir() if ".segtool-new-" in p.name]  # left by the kill
    ann = tmp_path / "ann"
    ann.mkdir()
    labelme_json(ann, "a")
    result = invoke(["rasterize", ann, out, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann", "out"]
    assert (out / "masks" / "a.png").is_file()


def test_killed_between_the_two_renames_puts_the_old_output_back(tmp_path):
    from segtool.core.swap import clear_stale, temp_name

    out = tmp_path / "out"
    old = temp_name(out, "old", dead_pid())
    old.mkdir()
    (old / "old.txt").write_text("old")  # moved aside, then the process died
    clear_stale(out)
    assert (out / "old.txt").read_text() == "old" and not old.exists()


def test_files_are_written_with_the_users_umask(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    labelme_json(ann, "a")
    previous = os.umask(0o022)
    try:
        result = invoke(["rasterize", ann, tmp_path / "out"])
        assert result.exit_code == 0, result.output
        result = invoke(["split", tmp_path / "out", "--val", "0", "--test", "0"])
    finally:
        os.umask(previous)
    for path in (tmp_path / "out").rglob("*"):
        expected = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & 0o777 == expected, path


def test_a_full_disk_names_the_file_the_user_asked_for(tmp_path):
    """A write through a handle on a full disk names no file; the message names the output
    (``OUT/x``, not the temporary being built beside it)."""
    import errno

    from segtool.core.files import DiskFullError, OutputPlan, atomic_path

    target = tmp_path / "summary.json"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target) and not target.exists()

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    plan = OutputPlan(overwrite=True)
    plan.write(out, folder=True, option="--out")
    with (
        pytest.raises(DiskFullError) as full,
        plan.build(),
        atomic_path(out.parent / plan.outputs[0].tmp.name / "config.json") as tmp,
    ):
        tmp.write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(full.value).startswith(f"{out / 'config.json'}: the disk is full")
    assert (out / "keep.txt").read_text() == "mine"


def test_a_checkpoint_on_a_full_disk_is_a_disk_full_error(tmp_path):
    """torch.save given a path reports a full disk as an opaque RuntimeError; segtool's
    checkpoints go through a handle, so the user reads which file and that the disk is full."""
    import torch

    from segtool.core.files import os_error
    from segtool.train.checkpoint import save_checkpoint

    mount_tmpfs(tmp_path / "full", "256k")
    target = tmp_path / "full" / "last.pt"
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, {"weights": torch.zeros(200_000)})
    message = str(os_error(caught.value))
    assert message.startswith(f"{target}: the disk is full"), message
    assert list((tmp_path / "full").iterdir()) == []


def test_a_trained_run_is_written_with_the_users_umask(base):
    # The trained model too: safetensors writes its file 0600, unreadable to the user's group.
    mask = os.umask(0)
    os.umask(mask)
    files = [p for p in (base / "run").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_a_running_owner_keeps_its_temporary(tmp_path):
    from segtool.core.swap import clear_stale, temp_name

    out = tmp_path / "out"
    alive = temp_name(out, "new", os.getppid())
    alive.mkdir()
    assert clear_stale(out) == [] and alive.is_dir()


def test_ctrl_c_during_rasterize_overwrite_keeps_the_old_dataset(base, tmp_path, monkeypatch):
    import segtool.rasterize.result as result_module

    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    setup_out_exists(world)
    before = snapshot(world.root)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(result_module, "write_mask", interrupted)  # while writing masks
    args = ["rasterize", world.ann, world.root / "out", "--labels", world.labels, "-j", "1"]
    result = invoke([*args, "--overwrite"])
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert snapshot(world.root) == before and not leftovers(world.root)


def test_a_disk_filling_up_during_training_names_the_run_and_keeps_the_old_one(
    base, tmp_path, monkeypatch
):
    # The room check passed, then the disk filled (another program wrote to it): the error
    # names the file in the user's run folder, not in the temporary one beside it.
    import errno

    import segtool.train.curves as curves

    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    before = snapshot(world.root)

    def full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(curves, "write_metrics", full)
    result = invoke(["train", world.ds, "--out", world.run, "--epochs", "1", *TINY, "--overwrite"])
    assert result.exit_code == 1 and result.exception is None, result.output
    assert f"{world.run / 'metrics.csv'}: the disk is full; nothing was replaced" in result.output
    assert snapshot(world.root) == before and not leftovers(world.root)


def test_the_room_check_counts_the_checkpoints_a_run_writes(tmp_path, monkeypatch):
    import collections

    import torch

    from segtool.core.files import DiskFullError
    from segtool.train import runfolder

    model = torch.nn.Linear(1000, 1000)  # 1,001,000 float32 weights
    need = 7 * 4 * 1_001_000 + 16 * 2**20  # last.pt (x3), the one beside it (x3), best (x1)
    usage = collections.namedtuple("usage", "total used free")
    room = {"free": need}
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda p: usage(0, 0, room["free"]))
    runfolder.check_room(tmp_path, model, tmp_path / "run")  # exactly enough
    room["free"] = need - 1
    with pytest.raises(DiskFullError, match=f"{tmp_path / 'run'}: .* MB free"):
        runfolder.check_room(tmp_path, model, tmp_path / "run")
    # A resumed run replaces its own last.pt and best model: their space counts as free.
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"\0" * 3000)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\0" * 1000)
    room["free"] = need - 4000
    runfolder.check_room(tmp_path, model, tmp_path / "run")
    room["free"] = need - 4001
    with pytest.raises(DiskFullError):
        runfolder.check_room(tmp_path, model, tmp_path / "run")


def test_the_room_check_matches_the_files_a_real_run_writes(base):
    # The peak of a run folder: last.pt, the new last.pt beside it, and the best model.
    import torch

    from segtool.train.runfolder import LAST_CHECKPOINT, PEAK_WEIGHTS, RUN_EXTRA_BYTES

    last = base / "run" / LAST_CHECKPOINT
    state = torch.load(last, map_location="cpu", weights_only=False)["model"]
    weights = sum(t.numel() * t.element_size() for t in state.values())
    model = sum(p.stat().st_size for p in (base / "run" / "model").rglob("*") if p.is_file())
    peak = 2 * last.stat().st_size + model
    # 7.33x on this tiny model (the zip's entries per tensor), 7.00x on a resnet18 U-Net.
    assert (PEAK_WEIGHTS - 0.5) * weights <= peak <= 1.1 * PEAK_WEIGHTS * weights
    assert peak <= PEAK_WEIGHTS * weights + RUN_EXTRA_BYTES  # the extra room covers the rest


def test_ctrl_c_during_train_overwrite_keeps_the_old_run(base, tmp_path, monkeypatch):
    import segtool.cli.train_progress as train_cli

    world = World(tmp_path / "w")
    shutil.copytree(base, world.root, symlinks=True)
    before = snapshot(world.root)

    class Interrupting(train_cli.RichReporter):
        def epoch_end(self, row):
            super().epoch_end(row)
            raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "RichReporter", Interrupting)
    args = ["train", world.ds, "--out", world.run, "--epochs", "2", *TINY, "--overwrite"]
    result = invoke(args)
    assert result.exit_code == 130, result.output
    assert "the new run was not complete and is discarded" in result.output
    assert "--resume" not in result.output  # no advice to resume a run that is not there
    assert snapshot(world.root) == before and not leftovers(world.root)
