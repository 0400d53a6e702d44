"""segtool rasterize on export files: end to end through the CLI, and every bad input refused
with one line, exit code 1 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from segtool.cli.rasterize import FORMATS as CLI_FORMATS
from segtool.sources.detect import FORMATS
from tests.cli import invoke
from tests.conftest import read_png, shape, write_image, write_labelme
from tests.test_source_labelstudio import brush_result

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def rasterize(*args: str | Path):
    return invoke(["rasterize", *map(str, args), "--jobs", "1"])


def coco_doc(**change) -> dict:
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 12, "height": 10},
            {"id": 2, "file_name": "sub/b.png", "width": 8, "height": 6},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 9, 0, 9, 8]]},
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 2,
                "iscrowd": 1,
                "segmentation": {"size": [6, 8], "counts": [10, 20, 18]},
            },
        ],
        "categories": [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}],
    }
    doc.update(change)
    return doc


def coco_tree(tmp: Path, doc: dict) -> Path:
    for img in doc["images"]:
        write_image(tmp / "pics" / img["file_name"], img["width"], img["height"])
    path = tmp / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_end_to_end_matches_pycocotools(tmp_path):
    doc = coco_doc()
    path = coco_tree(tmp_path, doc)
    result = rasterize(path, tmp_path / "ds", "--image-dir", tmp_path / "pics")
    assert result.exit_code == 0, result.output
    assert "class map derived from the annotations: 0=_background_, 1=car, 2=road" in result.stderr
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    ids = {1: 2, 2: 1}
    for img in doc["images"]:
        expected = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in coco.imgToAnns[img["id"]]:
            expected[coco.annToMask(ann) > 0] = (
                255 if ann.get("iscrowd") else ids[ann["category_id"]]
            )
        stem = Path(img["file_name"]).stem
        np.testing.assert_array_equal(read_png(tmp_path / "ds" / "masks" / f"{stem}.png"), expected)
    assert (tmp_path / "ds" / "images" / "b.png").read_bytes() == (
        tmp_path / "pics" / "sub" / "b.png"
    ).read_bytes()
    report = json.loads((tmp_path / "ds" / "rasterize_report.json").read_text())
    assert report["classes"]["car"]["shapes"] == 1 and report["ignore"]["pixels"] == 20


def test_format_is_detected_in_a_folder_and_the_choices_stay_in_sync(tmp_path):
    doc = coco_doc()
    coco_tree(tmp_path, doc)
    for img in doc["images"]:
        img["file_name"] = "pics/" + img["file_name"]
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    out = tmp_path.parent / f"{tmp_path.name}-ds"  # an output inside the input is refused
    result = rasterize(tmp_path, out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png"]
    assert list(CLI_FORMATS) == ["auto", *FORMATS]


def test_skip_invalid_writes_the_rest_and_nothing_outside_out(tmp_path):
    doc = coco_doc()
    doc["images"].append({"id": 3, "file_name": "../../escape.jpg", "width": 4, "height": 4})
    doc["annotations"].append(
        {"id": 9, "image_id": 2, "category_id": 7, "segmentation": [[0, 0, 1, 0, 1, 1]]}
    )
    path = coco_tree(tmp_path, {**doc, "images": doc["images"][:2]})
    path.write_text(json.dumps(doc))
    before = sorted(p for p in tmp_path.rglob("*") if "ds" not in p.parts)
    result = rasterize(path, tmp_path / "ds", "--image-dir", tmp_path / "pics", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ds" / "masks").iterdir()) == ["a.png"]
    report = json.loads((tmp_path / "ds" / "rasterize_report.json").read_text())
    reasons = " ".join(s["reason"] for s in report["skipped"])
    assert "category_id 7 matches no category" in reasons and "leaves the image folder" in reasons
    after = sorted(p for p in tmp_path.rglob("*") if "ds" not in p.parts)
    assert before == after


def test_not_a_labelme_file_names_the_format(tmp_path):
    (tmp_path / "ann" / "nested").mkdir(parents=True)
    (tmp_path / "ann" / "nested" / "instances.json").write_text(json.dumps(coco_doc()))
    result = rasterize(tmp_path / "ann", tmp_path / "ds")
    assert result.exit_code == 1
    assert "not a labelme file" in result.stderr and "a coco export" in result.stderr
    assert "--format coco" in result.stderr


# --- bad inputs: one line naming the file and region, exit 1, nothing written --------------

IMAGE_1 = {"id": 1, "file_name": "a.jpg", "width": 12, "height": 10}
ANN = {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 9, 0, 9, 8]]}

COCO_BAD = {
    "image_id matches nothing": (
        {"annotations": [{**ANN, "image_id": 4}]},
        "annotation 5: image_id 4 matches no entry",
    ),
    "category_id matches nothing": (
        {"annotations": [{**ANN, "category_id": 4}]},
        "category_id 4 matches no category",
    ),
    "odd length": (
        {"annotations": [{**ANN, "segmentation": [[0, 0, 9, 0, 9]]}]},
        "odd number of coordinates",
    ),
    "under 3 points": (
        {"annotations": [{**ANN, "segmentation": [[0, 0, 9, 0]]}]},
        "a polygon needs at least 3",
    ),
    "RLE size": (
        {"annotations": [{**ANN, "segmentation": {"size": [9, 12], "counts": [108]}}]},
        "RLE size 9 x 12 disagrees",
    ),
    "duplicate file names": (
        {"images": [IMAGE_1, {**IMAGE_1, "id": 2}]},
        "the same file_name as image id 1",
    ),
    "file_name escapes": (
        {"images": [{**IMAGE_1, "file_name": "../a.jpg"}]},
        "leaves the image folder",
    ),
    "image size disagrees": ({"images": [{**IMAGE_1, "width": 13}]}, "is 12 x 10 (width x height"),
    # Masks A.png and a.png are one file on macOS and Windows, and later steps refuse them.
    "stems differing in case": (
        {"images": [IMAGE_1, {**IMAGE_1, "id": 2, "file_name": "A.png"}]},
        "images 'a.jpg' and 'A.png' would both write masks/A.png on a case-insensitive disk",
    ),
    # A name the system refuses (over 255 bytes) is an image not found, not the end of the run.
    "file_name too long": (
        {"images": [{**IMAGE_1, "file_name": "x" * 300 + ".jpg"}]},
        "x.jpg' not found in",
    ),
    # masks/.a.png would be a hidden file, which every later step skips.
    "hidden mask name": (
        {"images": [{**IMAGE_1, "file_name": "sub/.a.jpg"}]},
        "image 'sub/.a.jpg' would write the hidden file masks/.a.png",
    ),
}


@pytest.mark.parametrize("case", sorted(COCO_BAD))
def test_bad_coco(tmp_path, case):
    change, expected = COCO_BAD[case]
    doc = coco_doc(images=[IMAGE_1], annotations=[ANN])
    write_image(tmp_path / "a.jpg", 12, 10)
    doc.update(change)
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    check_refused(
        rasterize(tmp_path / "instances.json", tmp_path / "ds"),
        "instances.json",
        expected,
        tmp_path,
    )


def check_refused(result, file_name: str, expected: str, tmp_path: Path) -> None:
    assert result.exit_code == 1, result.output
    first = result.stderr.strip().splitlines()[0]
    assert (
        first.startswith("error:")
        and file_name in first
        and expected in result.stderr.replace("\n", " ")
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob(".ds*"))


CVAT_BAD = {
    "malformed": ("<annotations><image name='a.jpg'>", "not well-formed XML"),
    "entity bomb": (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        '<annotations><image id="0" name="a.jpg" width="12" height="10"/></annotations>',
        "refused",
    ),
    "unknown kind": (
        '<annotations><image id="0" name="a.jpg" width="12" height="10">'
        '<cuboid label="car"/></image></annotations>',
        "<cuboid> 0 ('car'): unknown shape kind",
    ),
}


@pytest.mark.parametrize("case", sorted(CVAT_BAD))
def test_bad_cvat(tmp_path, case):
    text, expected = CVAT_BAD[case]
    write_image(tmp_path / "a.jpg", 12, 10)
    (tmp_path / "annotations.xml").write_text(text)
    result = rasterize(tmp_path / "annotations.xml", tmp_path / "ds", "--format", "cvat")
    check_refused(result, "annotations.xml", expected, tmp_path)


def via_region(**attrs) -> dict:
    return {
        "shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 3, "height": 3},
        "region_attributes": {"class": "car"},
    } | attrs


VIA_BAD = {
    "no shape attributes": (
        [{"region_attributes": {"class": "car"}}],
        "region 0: it has no shape_attributes",
    ),
    "several attributes": (
        [via_region(region_attributes={"class": "car", "colour": "red"})],
        "several region attributes could hold the class ('class', 'colour')",
    ),
}


@pytest.mark.parametrize("case", sorted(VIA_BAD))
def test_bad_via(tmp_path, case):
    regions, expected = VIA_BAD[case]
    write_image(tmp_path / "a.jpg", 12, 10)
    doc = {
        "a.jpg100": {"filename": "a.jpg", "size": 100, "regions": regions, "file_attributes": {}}
    }
    (tmp_path / "via.json").write_text(json.dumps(doc))
    check_refused(rasterize(tmp_path / "via.json", tmp_path / "ds"), "via.json", expected, tmp_path)


def test_via_end_to_end_with_chosen_attribute(tmp_path):
    write_image(tmp_path / "a.jpg", 12, 10)
    doc = {
        "a.jpg100": {
            "filename": "a.jpg",
            "size": 100,
            "file_attributes": {},
            "regions": [via_region(region_attributes={"class": "car", "colour": "red"})],
        }
    }
    (tmp_path / "via.json").write_text(json.dumps(doc))
    result = rasterize(tmp_path / "via.json", tmp_path / "ds", "--via-attribute", "colour")
    assert result.exit_code == 0, result.output
    assert read_png(tmp_path / "ds" / "masks" / "a.png")[2, 2] == 1
    assert json.loads((tmp_path / "ds" / "classes.json").read_text())["classes"][1]["name"] == "red"


def ls_task(results: list[dict]) -> list[dict]:
    return [
        {
            "id": 7,
            "data": {"image": "/data/upload/2/0a1b2c3d-a.jpg"},
            "annotations": [{"result": results, "was_cancelled": False}],
        }
    ]


LS_POLY = {
    "type": "polygonlabels",
    "id": "p",
    "original_width": 12,
    "original_height": 10,
    "value": {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["car"]},
}

LS_BAD = {
    "beyond 100 %": (
        [{**LS_POLY, "value": {**LS_POLY["value"], "points": [[0, 0], [100.5, 0], [5, 5]]}}],
        "point (100.5 %, 0 %) lies beyond 0..100 %",
    ),
    "size disagrees with the image": (
        [{**LS_POLY, "original_width": 24}],
        "the export says 24 x 10",
    ),
    "brush size disagrees": (
        [{**brush_result(np.ones((10, 11), bool), "car"), "original_width": 12}],
        "not 12 x 10 x 4 (RGBA)",
    ),
}


@pytest.mark.parametrize("case", sorted(LS_BAD))
def test_bad_labelstudio(tmp_path, case):
    results, expected = LS_BAD[case]
    write_image(tmp_path / "a.jpg", 12, 10)
    (tmp_path / "export.json").write_text(json.dumps(ls_task(results)))
    check_refused(
        rasterize(tmp_path / "export.json", tmp_path / "ds"), "export.json", expected, tmp_path
    )


def test_labelstudio_end_to_end(tmp_path):
    write_image(tmp_path / "imgs" / "a.jpg", 12, 10)
    (tmp_path / "export.json").write_text(json.dumps(ls_task([LS_POLY])))
    result = rasterize(tmp_path / "export.json", tmp_path / "ds", "--image-dir", tmp_path / "imgs")
    assert result.exit_code == 0, result.output
    mask = read_png(tmp_path / "ds" / "masks" / "a.png")
    assert mask[0, 0] == 1 and mask[9, 11] == 0


def test_missing_image_points_at_image_dir(tmp_path):
    (tmp_path / "instances.json").write_text(
        json.dumps(coco_doc(images=[IMAGE_1], annotations=[ANN]))
    )
    result = rasterize(tmp_path / "instances.json", tmp_path / "ds")
    check_refused(result, "instances.json", "image 'a.jpg' not found", tmp_path)
    assert "--image-dir" in result.stderr


@pytest.mark.parametrize(
    ("source", "option", "used_by"),
    [
        ("coco", ["--via-attribute", "kind"], "via"),
        ("labelme", ["--crowd", "class"], "coco"),
        ("labelme", ["--image-dir", "pics"], "coco, cvat, via, labelstudio"),
    ],
)
def test_an_option_the_source_does_not_read_is_refused(tmp_path, source, option, used_by):
    # Given for another source, the option would be silently ignored: the user would believe
    # the masks follow it.
    sources = {"coco": coco_tree(tmp_path, coco_doc()), "labelme": tmp_path / "ann"}
    write_labelme(sources["labelme"], "x", [shape("dog", [[0, 0], [3, 3]], "rectangle")])
    result = rasterize(sources[source], tmp_path / "ds", *option)
    assert result.exit_code == 1, result.output
    expected = f"a {source} source does not use {option[0]} (it is for {used_by}); drop it"
    assert expected in result.stderr and not (tmp_path / "ds").exists()
    # Where the options apply, they are taken.
    ok = rasterize(
        sources["coco"], tmp_path / "ds", "--image-dir", tmp_path / "pics", "--crowd", "class"
    )
    assert ok.exit_code == 0, ok.output
