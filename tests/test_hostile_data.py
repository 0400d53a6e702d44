"""Hostile data, one table row per situation: non-finite pixels and voxels, vertices far outside
the image, limits a batch or a time budget cannot fit, and names that differ only in Unicode
normalisation.

Each row runs through `tests.test_hostile`'s runner in a fresh copy of its world (labelme
folder, dataset, trained run, predictions, new images) with its five checks: the exit code;
the output names the file or value at fault (in one ``error:`` line for an error); no
traceback; nothing written (or, for a success, nothing outside the declared outputs); nothing
temporary left behind.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from segtool.sources.volume_folder import read_volume_dataset
from tests import test_hostile as hostile
from tests.conftest import shape, write_labelme
from tests.test_hostile import LBL, TINY, Case, World, _say, base, cmd, scene  # noqa: F401
from tests.test_source_via3 import project
from tests.volumes import make_msd, make_nnunet, save

R, S, T, P, E, IM = "rasterize", "split", "train", "predict", "evaluate", "import-masks"
NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
OUT = lambda w: w.root / "out"  # noqa: E731


# --- vertices far outside the image --------------------------------------------------------


def labelme_shape(*shapes: dict):
    """ann/a.json holds only `shapes` (on its 16 x 12 image)."""
    return lambda w: write_labelme(w.ann, "a", list(shapes))


def check_labelme_pixels(points: list) -> hostile.Check:
    """out/masks/a.png is labelme's own drawing of the polygon (class cat = 1 in labels.txt)."""

    def run(w: World, result) -> None:
        expected = Image.new("L", (16, 12), 0)
        ImageDraw.Draw(expected).polygon([tuple(p) for p in points], fill=1, outline=1)
        mask = np.asarray(Image.open(w.root / "out" / "masks" / "a.png"))
        np.testing.assert_array_equal(mask, np.asarray(expected))

    return run


def export(name: str, text: str, images: tuple[str, ...] = ("p.png",)):
    """exp/<name> holds `text` and exp/ the 32 x 32 images `images`."""

    def run(w: World) -> None:
        (w.root / "exp").mkdir(exist_ok=True)
        for image in images:
            Image.fromarray(scene(3)[0]).save(w.root / "exp" / image)
        (w.root / "exp" / name).write_text(text, encoding="utf-8")

    return run


def coco(*polygons: list, names: tuple[str, ...] = ("p.png",), files=None) -> str:
    images = [{"id": i + 1, "file_name": n, "width": 32, "height": 32} for i, n in enumerate(names)]
    anns = [
        {"id": j + 1, "image_id": 1 + j % len(names), "category_id": 1, "segmentation": [p]}
        for j, p in enumerate(polygons)
    ]
    return json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    )


def cvat(element: str) -> str:
    meta = "<meta><task><labels><label><name>cat</name></label></labels></task></meta>"
    image = f'<image id="0" name="p.png" width="32" height="32">{element}</image>'
    return f'<?xml version="1.0"?><annotations><version>1.1</version>{meta}{image}</annotations>'


def via2(shape_attributes: dict) -> str:
    region = {"shape_attributes": shape_attributes, "region_attributes": {"class": "cat"}}
    doc = {"p.png1234": {"filename": "p.png", "size": 1234, "file_attributes": {}}}
    doc["p.png1234"]["regions"] = [region]
    return json.dumps(doc)


def labelstudio(points: list) -> str:
    value = {"points": points, "polygonlabels": ["cat"]}
    result = {
        "type": "polygonlabels",
        "id": "r1",
        "original_width": 32,
        "original_height": 32,
        "value": value,
    }
    task = {"id": 1, "data": {"image": "p.png"}, "annotations": [{"id": 5, "result": [result]}]}
    return json.dumps([task])


def rasterize_export(name: str) -> hostile.Args:
    return cmd(R, lambda w: w.root / "exp" / name, OUT)


FAR = "far outside"
IN_REACH = [[2, 2], [16 - 1 + 1024, 2], [10, 9]]  # 1024 px beyond a 16 x 12 image's edge

VERTICES = [
    Case(
        "rasterize: labelme vertex beyond 32 bits (drawn mirrored before)",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "shape 0 ('cat')", "vertex (5e+09, 2)", FAR, "fix them"),
        setup=labelme_shape(shape("cat", [[2, 2], [5e9, 2], [10, 9]])),
    ),
    Case(
        "rasterize: labelme vertex far above the image",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "vertex (2, -3e+10)", FAR),
        setup=labelme_shape(shape("cat", [[2, -3e10], [9, 2], [10, 9]])),
    ),
    Case(
        "rasterize: labelme circle with a radius point at 1e12",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "vertex (1e+12, 5)", FAR),
        setup=labelme_shape(shape("cat", [[5, 5], [1e12, 5]], "circle")),
    ),
    Case(
        "rasterize: labelme rectangle corner at 1e20",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "vertex (1e+20, 1e+20)", FAR),
        setup=labelme_shape(shape("cat", [[1, 1], [1e20, 1e20]], "rectangle")),
    ),
    Case(
        "rasterize: labelme second shape is the far one",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "shape 1 ('dog')", "vertex (4, 4e+09)"),
        setup=labelme_shape(
            shape("cat", [[2, 2], [9, 2], [10, 9]]), shape("dog", [[4, 4e9]], "point")
        ),
    ),
    Case(
        "rasterize: labelme vertex one pixel beyond the reach",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "vertex (1040, 2)", "more than 1024 pixels"),
        setup=labelme_shape(shape("cat", [[2, 2], [1040, 2], [10, 9]])),
    ),
    Case(
        "rasterize: labelme vertex at the reach is drawn as labelme draws it",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        0,
        _say("masks written"),
        setup=labelme_shape(shape("cat", IN_REACH)),
        check=check_labelme_pixels(IN_REACH),
        outputs=("out",),
    ),
    Case(
        "rasterize: COCO vertex at 1e12",
        rasterize_export("c.json"),
        1,
        _say("c.json", "vertex (1e+12, 2)", FAR),
        setup=export("c.json", coco([2, 2, 1e12, 2, 9, 20])),
    ),
    Case(
        "rasterize: CVAT polygon vertex beyond 32 bits",
        rasterize_export("a.xml"),
        1,
        _say("a.xml", "'p.png'", "vertex (5e+09, 2)", FAR),
        setup=export("a.xml", cvat('<polygon label="cat" points="2,2;5e9,2;9,20"/>')),
    ),
    Case(
        "rasterize: CVAT box corner at 1e12",
        rasterize_export("a.xml"),
        1,
        _say("a.xml", "'p.png'", "1e+12", FAR),
        setup=export("a.xml", cvat('<box label="cat" xtl="2" ytl="2" xbr="1e12" ybr="20"/>')),
    ),
    Case(
        "rasterize: VIA 2 polygon vertex beyond 32 bits",
        rasterize_export("via.json"),
        1,
        _say("via.json", "'p.png'", "vertex (5e+09, 2)", FAR),
        setup=export(
            "via.json",
            via2({"name": "polygon", "all_points_x": [2, 5e9, 9], "all_points_y": [2, 2, 20]}),
        ),
    ),
    Case(
        "rasterize: VIA 2 circle of radius 1e12",
        rasterize_export("via.json"),
        1,
        _say("via.json", "'p.png'", "1e+12", FAR),
        setup=export("via.json", via2({"name": "circle", "cx": 5, "cy": 5, "r": 1e12})),
    ),
    Case(
        "rasterize: VIA 3 polygon vertex beyond 32 bits",
        rasterize_export("via3.json"),
        1,
        _say("via3.json", "'p.png'", "vertex (5e+09, 2)", FAR),
        setup=export(
            "via3.json",
            json.dumps(project({"p.png": [([7, 2, 2, 5e9, 2, 9, 20], {"1": "0"})]})),
        ),
    ),
    Case(
        "rasterize: Label Studio point far beyond 100 %",
        rasterize_export("ls.json"),
        1,
        _say("ls.json", "(1e+09 %, 0 %)", "beyond"),
        setup=export("ls.json", labelstudio([[0, 0], [1e9, 0], [50, 50]])),
    ),
]


# --- non-finite pixels and voxels ------------------------------------------------------------


def float_tiff(where: str, stem: str, value: float, drop: str | None = None):
    """A 32 x 32 float ("F") TIFF `where`/<stem>.tif with `value` at x=5, y=3; `drop` removes
    the PNG of the same stem (so the TIFF pairs with its mask)."""

    def run(w: World) -> None:
        data = scene(7)[0][..., 0].astype(np.float32) * 3.5
        data[3, 5] = value
        Image.fromarray(data, mode="F").save(w.root / where / f"{stem}.tif")
        if drop:
            (w.root / where / drop).unlink()

    return run


def mri(layout: str, value: float, voxel: tuple[int, ...], file: str = ""):
    """mri/: a 4-case volume folder (Decathlon 4-D, or nnU-Net one file per channel), split,
    with `value` at `voxel` of case 1's image (`file`: which channel file, nnU-Net)."""

    def run(w: World) -> None:
        root = w.root / "mri"
        if layout == "msd":
            make_msd(root, n=4, test=0)
            path = root / "imagesTr" / "BRATS_001.nii.gz"
        else:
            make_nnunet(root, n=4)
            path = root / "imagesTr" / file
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
        data[voxel] = value
        path.unlink()
        save(path, data, img.affine)
        cases = sorted(c.case for c in read_volume_dataset(root).cases)
        doc = {"seed": 0, "train": cases[:2], "val": cases[2:3], "test": cases[3:]}
        (root / "split.json").write_text(json.dumps(doc))

    return run


def train_on(dataset, *more) -> hostile.Args:
    return cmd(T, dataset, "--out", OUT, "--epochs", "1", *TINY, *more)


#: TINY less --size, which volume folders refuse (they train on standardised slices)
TINY_VOLUMES = [a for i, a in enumerate(TINY) if "--size" not in TINY[max(i - 1, 0) : i + 1]]


def train_on_volumes(dataset, *more) -> hostile.Args:
    return cmd(T, dataset, "--out", OUT, "--epochs", "1", *TINY_VOLUMES, *more)


NON_FINITE = [
    Case(
        "train: a float TIFF with a NaN pixel",
        train_on(lambda w: w.ds),
        1,
        _say("s00.tif", "nan at pixel (x=5, y=3)", "replace them"),
        setup=float_tiff("ds/images", "s00", np.nan, drop="s00.png"),
    ),
    Case(
        "train: a float TIFF with an infinite pixel",
        train_on(lambda w: w.ds),
        1,
        _say("s04.tif", "inf at pixel (x=5, y=3)"),
        setup=float_tiff("ds/images", "s04", np.inf, drop="s04.png"),
    ),
    Case(
        "train: a float TIFF with -inf in a validation image",
        train_on(lambda w: w.ds),
        1,
        _say("s11.tif", "-inf at pixel (x=5, y=3)"),
        setup=float_tiff("ds/images", "s11", -np.inf, drop="s11.png"),
    ),
    Case(
        "predict: a float TIFF with a NaN pixel",
        cmd(P, lambda w: w.run, lambda w: w.new, OUT),
        1,
        _say("n22.tif", "nan at pixel (x=5, y=3)"),
        setup=float_tiff("new", "n22", np.nan),
    ),
    Case(
        "train: a NaN voxel outside the brain of a 4-D volume",
        train_on_volumes(lambda w: w.root / "mri", "--device", "cpu"),
        1,
        _say("BRATS_001.nii.gz", "nan at voxel (0, 0, 0, 0)", "outside the body"),
        setup=mri("msd", np.nan, (0, 0, 0, 0)),
    ),
    Case(
        "train: an infinite voxel in the second sequence's own file",
        train_on_volumes(lambda w: w.root / "mri"),
        1,
        _say("case01_0001.nii.gz", "inf at voxel (3, 4, 5)"),
        setup=mri("nnunet", np.inf, (3, 4, 5), "case01_0001.nii.gz"),
    ),
]


# --- limits ----------------------------------------------------------------------------------

LIMITS = [
    Case(
        "train: --size far beyond --max-pixels",
        train_on(lambda w: w.ds, "--size", "20000"),
        1,
        _say("--size 20000", "400,000,000 pixels", "--max-pixels"),
    ),
    Case(
        "train: --crop beyond --max-pixels",
        cmd(T, lambda w: w.ds, "--out", OUT, "--epochs", "1", "--crop", "16000", "--workers", "0"),
        1,
        _say("--crop 16000", "256,000,000 pixels"),
    ),
    Case(
        "train: --size over a lowered --max-pixels",
        train_on(lambda w: w.ds, "--size", "1000,800", "--max-pixels", "500000"),
        1,
        _say("--size 1000,800", "800,000 pixels", "500,000"),
    ),
    Case(
        "train: one batch needs more memory than the machine has",
        cmd(T, lambda w: w.ds, "--out", OUT, "--crop", "13000", "--batch-size", "64"),
        1,
        _say("--crop 13000 with --batch-size 64", "GiB", "--batch-size"),
    ),
    Case(
        "train: a time budget shorter than one step",
        train_on(lambda w: w.ds, "--time-budget", "0.01"),
        1,
        _say("--time-budget 0.01s cannot fit one epoch", "before the first step", "--epochs"),
    ),
    Case(
        "train: a time budget shorter than one step, with --epochs given",
        cmd(T, lambda w: w.ds, "--out", OUT, *TINY, "--epochs", "3", "--time-budget", "0.01"),
        1,
        _say("--time-budget 0.01s cannot fit one epoch"),
    ),
]


# --- names in two Unicode normalisations ---------------------------------------------------

SPELLINGS = ["'caf\\xe9", "'cafe\\u0301", "NFC", "NFD", "Unicode"]


def ds_twin_pair(w: World) -> None:
    """ds/images/café.png (NFC) and ds/masks/café.png (NFD), for s00's pair."""
    (w.ds / "images" / "s00.png").rename(w.ds / "images" / f"{NFC}.png")
    (w.ds / "masks" / "s00.png").rename(w.ds / "masks" / f"{NFD}.png")
    split = json.loads((w.ds / "split.json").read_text())
    split["train"].remove("s00")
    (w.ds / "split.json").write_text(json.dumps(split))


def ann_twins(w: World) -> None:
    write_labelme(w.ann, NFC, [shape("cat", [[2, 2], [10, 2], [10, 9]])])
    write_labelme(w.ann, NFD, [shape("cat", [[2, 2], [10, 2], [10, 9]])])


def ann_image_spelled_apart(w: World) -> None:
    write_labelme(w.ann, "a", [shape("cat", [[2, 2], [10, 2], [10, 9]])], imagePath=f"{NFD}.png")
    (w.ann / "a.png").rename(w.ann / f"{NFC}.png")


def folders_twin_pair(w: World) -> None:
    """im/café.png (NFC) and its mask mk/café.png (NFD)."""
    (w.root / "im").mkdir()
    (w.root / "mk").mkdir()
    shutil.copy(w.ds / "images" / "s01.png", w.root / "im" / f"{NFC}.png")
    shutil.copy(w.ds / "masks" / "s01.png", w.root / "mk" / f"{NFD}.png")


def folders_twin_images(w: World) -> None:
    (w.root / "im").mkdir()
    (w.root / "mk").mkdir()
    for name in (NFC, NFD):
        shutil.copy(w.ds / "images" / "s01.png", w.root / "im" / f"{name}.png")
        shutil.copy(w.ds / "masks" / "s01.png", w.root / "mk" / f"{name}.png")


def new_twins(w: World) -> None:
    for name in (NFC, NFD):
        Image.fromarray(scene(4)[0]).save(w.new / f"{name}.png")


def pred_twins(w: World) -> None:
    for name in (NFC, NFD):
        shutil.copy(w.pred / "s13.png", w.pred / f"{name}.png")
    shutil.copy(w.gt / "s13.png", w.gt / f"{NFC}.png")


def pred_spelled_apart(w: World) -> None:
    """The reference gt/café.png (NFC), its prediction pred/café.png (NFD)."""
    shutil.copy(w.pred / "s13.png", w.pred / f"{NFD}.png")
    shutil.copy(w.gt / "s13.png", w.gt / f"{NFC}.png")


UNICODE = [
    Case(
        "split: an image and its mask named in two normalisations",
        cmd(S, lambda w: w.ds, "--overwrite"),
        0,
        _say("café.png", *SPELLINGS, "convmv"),
        setup=ds_twin_pair,
        outputs=("ds/split.json",),
    ),
    Case(
        "train: an image and its mask named in two normalisations",
        train_on(lambda w: w.ds),
        1,
        _say("café.png", *SPELLINGS),
        setup=ds_twin_pair,
    ),
    Case(
        "rasterize: two annotation files named in two normalisations",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("café.json", *SPELLINGS),
        setup=ann_twins,
    ),
    Case(
        "rasterize: labelme imagePath in NFD, the image on disk in NFC",
        cmd(R, lambda w: w.ann, OUT, *LBL),
        1,
        _say("a.json", "not found", "'cafe\\u0301.png' (NFD)", "'caf\\xe9.png' (NFC)"),
        setup=ann_image_spelled_apart,
    ),
    Case(
        "rasterize: COCO images named in two normalisations",
        rasterize_export("c.json"),
        1,
        _say("c.json", "would both write", *SPELLINGS),
        setup=export(
            "c.json",
            coco([2, 2, 9, 2, 9, 20], [2, 2, 9, 2, 9, 20], names=(f"{NFC}.png", f"{NFD}.png")),
            images=(f"{NFC}.png", f"{NFD}.png"),
        ),
    ),
    Case(
        "rasterize: COCO file_name in NFD, the image on disk in NFC",
        rasterize_export("c.json"),
        1,
        _say("c.json", "not found", "(NFD)", "(NFC)"),
        setup=export(
            "c.json", coco([2, 2, 9, 2, 9, 20], names=(f"{NFD}.png",)), images=(f"{NFC}.png",)
        ),
    ),
    Case(
        "import-masks: an image and its mask named in two normalisations",
        cmd(IM, lambda w: w.root / "im", lambda w: w.root / "mk", OUT),
        1,
        _say("no image", *SPELLINGS),
        setup=folders_twin_pair,
    ),
    Case(
        "import-masks: two images named in two normalisations",
        cmd(IM, lambda w: w.root / "im", lambda w: w.root / "mk", OUT),
        1,
        _say("café.png", *SPELLINGS),
        setup=folders_twin_images,
    ),
    Case(
        "predict: two new images named in two normalisations",
        cmd(P, lambda w: w.run, lambda w: w.new, OUT),
        1,
        _say("café.png", *SPELLINGS),
        setup=new_twins,
    ),
    Case(
        "evaluate: two predictions named in two normalisations",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", OUT),
        1,
        _say("café.png", *SPELLINGS),
        setup=pred_twins,
    ),
    Case(
        "evaluate: a prediction named in NFD, its reference in NFC",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", OUT),
        1,
        _say("café.png", "another spelling", *SPELLINGS),
        setup=pred_spelled_apart,
    ),
    Case(
        "evaluate --allow-missing: a prediction named in NFD, its reference in NFC (not scored as missing)",
        cmd(E, lambda w: w.pred, lambda w: w.gt, "--out", OUT, "--allow-missing"),
        1,
        _say("café.png", "another spelling", *SPELLINGS),
        setup=pred_spelled_apart,
    ),
]

CASES = VERTICES + NON_FINITE + LIMITS + UNICODE


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_data(case: Case, base: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    hostile.test_hostile(case, base, tmp_path, monkeypatch)


def test_enough_situations() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


# --- the rules themselves, against hand-computed values --------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "far"),
    [
        (-1024, 0, False),  # 16 x 12 image: reach max(1024, 4 * 16) = 1024 each side
        (-1024.5, 0, True),
        (15 + 1024, 11 + 1024, False),
        (15 + 1024.5, 0, True),
        (0, 11 + 1025, True),
        (float("inf"), 0, True),
    ],
)
def test_the_reach_of_a_small_image(x, y, far):
    from segtool.sources.shapes import far_vertex

    assert (far_vertex([(0, 0), (x, y)], 16, 12) is not None) == far


def test_the_reach_grows_with_a_large_image():
    from segtool.sources.shapes import far_vertex, reach

    assert reach(1000, 300) == 4000
    assert far_vertex([(999 + 4000, -4000)], 1000, 300) is None
    assert "vertex (-4001, 0)" in far_vertex([(-4001, 0)], 1000, 300)


def test_non_finite_names_the_first_bad_element_and_counts_them():
    from segtool.core.finite import non_finite, non_finite_problem

    data = np.zeros((4, 5, 3), np.float32)
    data[2, 1, 0] = np.inf
    data[1, 3, 2] = np.nan
    assert non_finite(data) == ((1, 3, 2), pytest.approx(np.nan, nan_ok=True), 2)
    assert non_finite(np.full((2, 2), 3e38, np.float32)) is None  # finite, huge: no overflow
    assert non_finite(np.arange(6).reshape(2, 3)) is None
    picture = np.ones((3, 4), np.float64)
    picture[2, 1] = -np.inf
    assert "-inf at pixel (x=1, y=2)" in non_finite_problem(picture, "pixel")


def test_names_in_two_normalisations():
    from segtool.core.names import name_key, spelled_apart, spellings, twin_note, twins

    assert NFC != NFD and name_key(NFC) == name_key(NFD) == name_key("CAFÉ")
    assert spelled_apart(NFC, NFD) and not spelled_apart(NFC, NFC)
    assert not spelled_apart("cafe", "café")
    text = spellings(NFD, NFC)
    assert "'cafe\\u0301' (NFD) and 'caf\\xe9' (NFC)" in text
    assert twin_note(NFC, twins([NFD, "b"])).startswith("; 'caf\\xe9' (NFC)")
    assert twin_note(NFC, twins([NFC])) == "" and twin_note("x", twins([NFD])) == ""


def test_the_batch_lower_bound_by_hand():
    from segtool.train.limits import batch_bytes

    # 10 x 20 pixels, 3 samples, 3 channels, 16 decoder channels:
    # per pixel 4 * 3 + 8 + 12 * 16 = 212 bytes; 200 * 3 * 212 = 127,200.
    assert batch_bytes(10, 20, 3, 3, 16) == 127_200


def test_a_budget_that_fits_one_epoch_passes_and_one_that_does_not_says_what_fits():
    from segtool.core.errors import SegtoolError
    from segtool.train.limits import check_budget
    from segtool.train.plan import Timing

    check_budget(Timing(0.5, 10, 1.0, 2.0), 9.0, 1)
    with pytest.raises(SegtoolError) as info:
        check_budget(Timing(0.5, 10, 1.0, 2.0), 4.0, 0)
    # 2 s fixed, 6 s an epoch; 4 s leave 2 s: 4 steps of 0.5 s; 8 s * 1.2 = 10 s to suggest.
    text = str(info.value)
    assert "6.0 s (10 steps of 0.50 s" in text and "room for 4 step(s)" in text
    assert "--time-budget 10s or more" in text
