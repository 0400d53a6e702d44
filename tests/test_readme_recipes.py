"""The README's recipes run as written, on tiny data made here in each recipe's layout.

Each ``<!-- recipe: NAME -->`` comment in the README is followed by a bash block; every
``segtool`` line of it runs through the command line in a folder holding that recipe's data
(made by ``MAKERS[NAME]``), and must end with exit code 0. A training line keeps its dataset,
``--out`` and any other option, but trains one small epoch instead of its budget, so the
recipes run in seconds; the rest of the line is the README's own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.masks import write_mask
from segtool.sources.maskconventions import CAMVID_CLASSES
from segtool.sources.maskfolders import VOC_CLASSES
from tests.cli import invoke

README = Path(__file__).resolve().parents[1] / "README.md"
RECIPE = re.compile(r"<!-- recipe: ([\w-]+) -->\s*```bash\n(.*?)```", re.S)
#: Options of a training line the test replaces: one small, fast epoch instead.
REPLACED = {"--time-budget", "--epochs", "--size", "--crop", "--encoder", "--batch-size"}
FAST_TRAIN = ["--epochs", "1", "--encoder", "tu-resnet10t", "--batch-size", "4", "--workers", "0"]
FAST_TRAIN += ["--decoder-channels", "16,16,16,16,16"]
N, SIZE = 12, 40


def recipes() -> dict[str, list[list[str]]]:
    """Recipe name -> its segtool command lines, split as a shell splits them."""
    found = {}
    for name, block in RECIPE.findall(README.read_text()):
        lines = [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
        found[name] = [shlex.split(line) for line in lines if line.startswith("segtool ")]
    return found


def _fast(args: list[str], volumes: bool) -> list[str]:
    """A training line's arguments with the options in `REPLACED` swapped for one fast epoch."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in REPLACED:
            skip = True
        else:
            kept.append(arg)
    return [*kept, *FAST_TRAIN, *(["--crop", "16"] if volumes else ["--size", "32"])]


# --- tiny data in each recipe's layout -----------------------------------------------------


def _square(i: int) -> list[list[float]]:
    """A square that moves with the image number, so no two images are alike."""
    x, y = 4 + (i * 3) % 16, 6 + (i * 5) % 14
    return [[x, y], [x + 16, y], [x + 16, y + 14], [x, y + 14]]


def _spot(i: int) -> list[list[float]]:
    return [[30, 30], [35, 30], [35, 35], [30, 35]] if i % 3 == 0 else []


def _images(folder: Path, suffix: str = ".png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(N):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        x, y = _square(i)[0]
        pixels[int(y) : int(y) + 14, int(x) : int(x) + 16] += 150  # the object is brighter
        names.append(f"img{i:02d}{suffix}")
        Image.fromarray(pixels).save(folder / names[-1])
    return names


def make_labelme(root: Path) -> None:
    for i, name in enumerate(_images(root / "photos")):
        shapes = [("cell", _square(i))] + ([("spot", _spot(i))] if _spot(i) else [])
        doc = {
            "version": "5.4.1",
            "flags": {},
            "shapes": [
                {"label": label, "points": pts, "group_id": None, "shape_type": "polygon"}
                for label, pts in shapes
            ],
            "imagePath": name,
            "imageData": None,
            "imageHeight": SIZE,
            "imageWidth": SIZE,
        }
        (root / "photos" / name).with_suffix(".json").write_text(json.dumps(doc))


def make_coco(root: Path) -> None:
    names = _images(root / "images")
    anns = []
    for i in range(N):
        for cat, pts in ((1, _square(i)), (2, _spot(i))):
            if pts:
                flat = [float(v) for p in pts for v in p]
                anns.append(
                    {"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": False}
                    | {"segmentation": [flat], "area": 1.0, "bbox": [0, 0, 1, 1]}
                )
    doc = {
        "images": [
            {"id": i, "file_name": n, "width": SIZE, "height": SIZE} for i, n in enumerate(names)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "spot"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))


def make_cvat(root: Path) -> None:
    names = _images(root / "cvat_export" / "images")
    body = ""
    for i, name in enumerate(names):
        shapes = [("cell", _square(i)), ("spot", _spot(i))]
        polygons = "".join(
            f'<polygon label="{label}" occluded="0" z_order="0" '
            f'points="{";".join(f"{x},{y}" for x, y in pts)}"/>'
            for label, pts in shapes
            if pts
        )
        body += f'<image id="{i}" name="{name}" width="{SIZE}" height="{SIZE}">{polygons}</image>'
    (root / "cvat_export" / "annotations.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>{body}'
        "</annotations>"
    )


def make_via(root: Path) -> None:
    (root / "via_region_data.json").write_text(json.dumps(_via_doc(_images(root / "images"))))


def make_via_splits(root: Path) -> None:
    """VIA's balloon layout: train/ and val/, each with its images and its own export."""
    names = _images(root / "balloon" / "all")
    for split, part in (("train", names[:9]), ("val", names[9:])):
        (root / "balloon" / split).mkdir()
        for name in part:
            (root / "balloon" / "all" / name).rename(root / "balloon" / split / name)
        doc = _via_doc(part, first=names.index(part[0]))
        (root / "balloon" / split / "via_region_data.json").write_text(json.dumps(doc))
    (root / "balloon" / "all").rmdir()


def _via_doc(names: list[str], first: int = 0) -> dict:
    doc = {}
    for i, name in enumerate(names, first):
        regions = [
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [p[0] for p in pts],
                    "all_points_y": [p[1] for p in pts],
                },
                "region_attributes": {"class": label},
            }
            for label, pts in (("cell", _square(i)), ("spot", _spot(i)))
            if pts
        ]
        doc[f"{name}1"] = {"filename": name, "size": 1, "regions": regions, "file_attributes": {}}
    return doc


def make_labelstudio(root: Path) -> None:
    names = _images(root / "my_images")
    tasks = []
    for i, name in enumerate(names):
        results = [
            {
                "type": "polygonlabels",
                "original_width": SIZE,
                "original_height": SIZE,
                "value": {
                    "points": [[100 * x / SIZE, 100 * y / SIZE] for x, y in pts],
                    "polygonlabels": [label],
                },
            }
            for label, pts in (("cell", _square(i)), ("spot", _spot(i)))
            if pts
        ]
        tasks.append(
            {
                "id": i + 1,
                "data": {"image": f"/data/upload/1/3f2a9b1c-{name}"},
                "annotations": [{"id": i + 1, "was_cancelled": False, "result": results}],
            }
        )
    (root / "project-1-at-2026-01-01.json").write_text(json.dumps(tasks))


def make_masks(root: Path) -> None:
    """ISBI 2012 style: 0/255 masks in a folder of their own, 255 the cell interior and 0 the
    thin membranes between cells (here a 2-pixel grid line through each image)."""
    for i, name in enumerate(_images(root / "images")):
        mask = np.full((SIZE, SIZE), 255, np.uint8)
        x, y = (int(v) for v in _square(i)[0])
        mask[y : y + 2, :] = 0
        mask[:, x : x + 2] = 0
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / name)


def make_camvid(root: Path) -> None:
    """CamVid as SegNet ships it: train/ + trainannot/ (val, test alike), label ids 0..11."""
    camvid = root / "CamVid"
    for i, name in enumerate(_images(camvid / "all")):
        split = "train" if i < 8 else "val" if i < 10 else "test"
        (camvid / split).mkdir(exist_ok=True)
        (camvid / "all" / name).rename(camvid / split / name)
        ids = np.full((SIZE, SIZE), 3, np.uint8)  # road
        ids[: SIZE // 3] = 0  # sky
        x, y = (int(v) for v in _square(i)[0])
        ids[y : y + 14, x : x + 16] = 8  # a car
        ids[-2:] = 11  # unlabelled
        (camvid / f"{split}annot").mkdir(exist_ok=True)
        Image.fromarray(ids).save(camvid / f"{split}annot" / name)
    (camvid / "all").rmdir()


def make_voc(root: Path) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    names = _images(voc / "JPEGImages", ".jpg")
    cmap = make_class_map(["_background_", "aeroplane"])
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i, name in enumerate(names):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        x, y = (int(v) for v in _square(i)[0])
        mask[y : y + 14, x : x + 16] = 1
        mask[y, x : x + 16] = 255  # VOC's void outline
        write_mask(voc / "SegmentationClass" / f"{Path(name).stem}.png", mask, cmap)
    stems = [Path(n).stem for n in names]
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:9]) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems[9:]) + "\n")


def make_decathlon(root: Path) -> None:
    from tests.volumes import make_msd

    make_msd(root / "Task01_BrainTumour", n=6, test=1)


def make_nnunet(root: Path) -> None:
    from tests.volumes import make_nnunet

    make_nnunet(root / "Dataset001_Tiny", n=5)


MAKERS = {
    "labelme": make_labelme,
    "coco": make_coco,
    "cvat": make_cvat,
    "via": make_via,
    "via-splits": make_via_splits,
    "labelstudio": make_labelstudio,
    "masks": make_masks,
    "voc": make_voc,
    "camvid": make_camvid,
    "decathlon": make_decathlon,
    "nnunet": make_nnunet,
}
#: The recipes that end in a dataset; the "score" recipe takes it from there.
DATASET_RECIPES = (
    "labelme", "coco", "cvat", "via", "via-splits", "labelstudio", "masks", "voc", "camvid",
)  # fmt: skip
#: The volume recipes, which go all the way to a score.
VOLUME_RECIPES = ("decathlon", "nnunet")


def run_recipe(name: str, where: Path) -> None:
    """Run every segtool line of recipe `name` in `where`, each needing exit code 0."""
    here = Path.cwd()
    os.chdir(where)
    try:
        for args in recipes()[name]:
            if args[1] == "train":
                args = _fast(args, volumes=name in VOLUME_RECIPES)
            result = invoke(args[1:])
            assert result.exit_code == 0, f"{name}: {shlex.join(args)}\n{result.output}"
    finally:
        os.chdir(here)


def test_every_recipe_has_data_and_a_test():
    assert sorted(recipes()) == sorted([*MAKERS, "score"])


#: What each recipe's dataset must hold: its classes as the README's recipe names them.
CLASSES = {
    "masks": ["membrane", "cell"],
    "voc": ["_background_", *VOC_CLASSES[1:]],
    "camvid": [name for name, _ in CAMVID_CLASSES],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASET_RECIPES)
def test_a_recipe_goes_from_data_to_a_score(tmp_path, name):
    """The recipe makes a split dataset, and the "score" recipe trains, scores and predicts
    it: from the data in that tool's layout to a test score."""
    MAKERS[name](tmp_path)
    run_recipe(name, tmp_path)
    dataset = tmp_path / "dataset"
    split = json.loads((dataset / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(
        p.stem for p in (dataset / "masks").glob("*.png")
    )
    assert len(list((dataset / "masks").glob("*.png"))) == N
    assert split["val"] and split["train"]
    classes = [c["name"] for c in json.loads((dataset / "classes.json").read_text())["classes"]]
    assert classes == CLASSES.get(name, ["_background_", "cell", "spot"])
    scored = "test"
    if any(args[1] == "evaluate" for args in recipes()[name]):  # the recipe scores itself
        scored = "val"
    else:
        _images(tmp_path / "new_images")
        run_recipe("score", tmp_path)
        assert len(list((tmp_path / "predictions").glob("*.png"))) == N
    summary = json.loads((tmp_path / f"run/evaluation/{scored}/summary.json").read_text())
    assert summary["n_images"] == len(split[scored])
    assert (tmp_path / f"run/evaluation/{scored}/confusion.csv").is_file()


def test_the_membrane_recipe_names_the_isbi_polarity_right(tmp_path):
    """ISBI 2012 masks: 255 is the cell interior, 0 the thin membrane. The README's recipe must
    make the thin lines the membrane class (a minority of pixels), not the cells."""
    make_masks(tmp_path)
    run_recipe("masks", tmp_path)
    doc = json.loads((tmp_path / "dataset/classes.json").read_text())
    membrane = next(c["id"] for c in doc["classes"] if c["name"] == "membrane")
    masks = [np.asarray(Image.open(p)) for p in (tmp_path / "dataset/masks").glob("*.png")]
    assert np.mean([(m == membrane).mean() for m in masks]) < 0.25
    assert doc["background_scored"] is True  # the membrane, class 0, is scored


@pytest.mark.slow
@pytest.mark.parametrize("name", VOLUME_RECIPES)
def test_the_volume_recipe_trains_and_scores_in_3d(tmp_path, name):
    MAKERS[name](tmp_path)
    run_recipe(name, tmp_path)
    summary = json.loads((tmp_path / "run/evaluation/test/summary.json").read_text())
    assert summary["volumes"] is True and summary["hd95_unit"] == "mm"
