"""rasterize --instances on export files: each format's objects against an expectation built
in the test (pycocotools for COCO; hand-numbered regions drawn one by one with PIL for CVAT,
VIA and Label Studio), the class mask untouched, objects counted, ignore and crowd pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO

from segtool.rasterize.folder import rasterize_dir
from segtool.rasterize.instances import MAX_OBJECTS, draw_objects
from segtool.sources.coco import read_coco
from segtool.sources.shapes import Shape
from tests.cli import invoke
from tests.conftest import read_png, write_image
from tests.source_reference import region_canvas

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LABELS = "__ignore__\n_background_\ncar\nroad\n"


def labels_file(tmp: Path) -> Path:
    path = tmp / "labels.txt"
    path.write_text(LABELS)
    return path


def composite(regions, height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """(kind, params, ink) in drawing order, each region drawn alone, later over earlier."""
    out = np.zeros((height, width), dtype)
    for kind, params, ink in regions:
        out[region_canvas(kind, params, height, width)] = ink
    return out


def both_masks(tmp: Path, export: Path, *args, **options) -> tuple[Path, Path]:
    """Rasterize `export` with and without --instances; the two dataset folders."""
    with_ids, without = tmp / "ds", tmp / "plain"
    rasterize_dir(export, with_ids, instances=True, jobs=1, **options)
    rasterize_dir(export, without, jobs=1, **options)
    return with_ids, without


def check_agrees_with_class_mask(ds: Path, plain: Path, stem: str, ignore: int = 255) -> None:
    """The class mask is byte for byte what a run without --instances writes, and the instance
    mask is 0 exactly where it is background, `ignore` exactly where it is ignore."""
    mask_file = f"masks/{stem}.png"
    assert (ds / mask_file).read_bytes() == (plain / mask_file).read_bytes()
    ids, classes = read_png(ds / "instances" / f"{stem}.png"), read_png(ds / mask_file)
    np.testing.assert_array_equal(ids == 0, classes == 0)
    np.testing.assert_array_equal(ids == ignore, classes == 255)


# --- COCO: one annotation, one instance; crowd regions ignored ------------------------------


def coco_reference(doc: dict) -> dict[int, np.ndarray]:
    """pycocotools' annToMask per annotation, composited in file order: non-crowd annotations
    numbered 1, 2, ... per image, crowd regions 255."""
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    out = {}
    for img in doc["images"]:
        ids, number = np.zeros((img["height"], img["width"]), np.uint8), 0
        for ann in coco.imgToAnns[img["id"]]:
            if ann.get("iscrowd"):
                value = 255
            else:
                number += 1
                value = number
            ids[coco.annToMask(ann) > 0] = value
        out[img["id"]] = ids
    return out


def coco_fixture() -> dict:
    """Two images whose annotations interleave in the file; overlaps, a two-polygon
    annotation, an RLE and a crowd region."""
    car, road = 1, 2
    anns = [
        (1, road, [[0, 0, 19, 0, 19, 9, 0, 9]], 0),
        (2, car, [[1, 1, 8, 1, 8, 7]], 0),
        (1, car, [[3, 2, 12, 2, 12, 11, 3, 11]], 0),
        (1, car, {"size": [14, 20], "counts": [30, 20, 8, 20, 202]}, 1),
        (1, car, [[14, 1, 18, 1, 18, 5], [15, 8, 19, 8, 19, 13]], 0),
        (1, road, {"size": [14, 20], "counts": [100, 6, 8, 6, 160]}, 0),
        (2, road, [[4, 4, 11, 4, 11, 9, 4, 9]], 0),
    ]
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 20, "height": 14},
            {"id": 2, "file_name": "b.png", "width": 12, "height": 10},
        ],
        "annotations": [
            {"id": k, "image_id": i, "category_id": c, "segmentation": s, "iscrowd": crowd}
            for k, (i, c, s, crowd) in enumerate(anns, 1)
        ],
        "categories": [{"id": car, "name": "car"}, {"id": road, "name": "road"}],
    }


def write_coco(tmp: Path, doc: dict) -> Path:
    for img in doc["images"]:
        write_image(tmp / img["file_name"], img["width"], img["height"])
    path = tmp / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_instances_match_pycocotools_per_annotation(tmp_path):
    doc = coco_fixture()
    path = write_coco(tmp_path, doc)
    ds, plain = both_masks(tmp_path, path)
    expected = coco_reference(doc)
    for img in doc["images"]:
        stem = Path(img["file_name"]).stem
        ids = read_png(ds / "instances" / f"{stem}.png")
        np.testing.assert_array_equal(ids, expected[img["id"]])
        check_agrees_with_class_mask(ds, plain, stem)
    assert read_png(ds / "instances" / "a.png").max() == 255  # the crowd region is there
    classes = json.loads((ds / "rasterize_report.json").read_text())["classes"]
    assert (classes["car"]["objects"], classes["road"]["objects"]) == (3, 3)


def test_coco_crowd_is_ignored_even_when_painted_as_its_class(tmp_path):
    doc = coco_fixture()
    path = write_coco(tmp_path, doc)
    rasterize_dir(path, tmp_path / "ds", instances=True, crowd="class", jobs=1)
    ids = read_png(tmp_path / "ds" / "instances" / "a.png")
    np.testing.assert_array_equal(ids, coco_reference(doc)[1])
    classes = read_png(tmp_path / "ds" / "masks" / "a.png")
    assert 255 not in classes and set(classes[ids == 255].tolist()) == {1}  # car, not ignore


@st.composite
def coco_images(draw):
    """A COCO document of one 18 x 15 image with random (possibly crowd) polygon annotations."""
    anns = []
    for k in range(draw(st.integers(1, 7))):
        n = draw(st.integers(3, 6))
        coords = draw(st.lists(st.floats(-2, 20, allow_nan=False), min_size=2 * n, max_size=2 * n))
        crowd = draw(st.sampled_from([0, 0, 0, 1]))
        cat = draw(st.sampled_from([1, 2]))
        seg = {"image_id": 1, "category_id": cat, "segmentation": [coords], "iscrowd": crowd}
        anns.append({"id": k + 1, **seg})
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 18, "height": 15}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "road"}],
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=coco_images())
def test_random_coco_instances_match_pycocotools(tmp_path, doc):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    (record,) = read_coco(path)
    ids, labels = draw_objects(record.shapes, 15, 18)
    np.testing.assert_array_equal(ids, coco_reference(doc)[1])
    names = {1: "car", 2: "road"}
    assert labels == [names[a["category_id"]] for a in doc["annotations"] if not a["iscrowd"]]


# --- CVAT: a shape, or the shapes of one group_id --------------------------------------------

# (XML element, z_order, expected id, regions as the reference draws them), in file order.
# Objects are numbered by their first element in the file: a group's later members, a
# <points> element's points and a mixed-label group share one id; ignore and background
# shapes take none.
CVAT_ELEMENTS = [
    ('<polygon label="car" points="1,1;10,1;10,8;1,8" group_id="3"/>', 0, 1,
     [("polygon", [(1, 1), (10, 1), (10, 8), (1, 8)])]),
    ('<box label="road" xtl="5" ytl="5" xbr="15" ybr="12"/>', 0, 2,
     [("box", (5, 5, 15, 12, 0, (0, 0)))]),
    ('<polygon label="car" points="12,2;18,2;18,6" group_id="3"/>', 0, 1,
     [("polygon", [(12, 2), (18, 2), (18, 6)])]),
    ('<points label="car" points="3,12;8,13"/>', 0, 3,
     [("point", (3, 12)), ("point", (8, 13))]),
    ('<polygon label="road" points="0,10;8,10;8,15" group_id="0" z_order="1"/>', 1, 4,
     [("polygon", [(0, 10), (8, 10), (8, 15)])]),
    ('<box label="__ignore__" xtl="6" ytl="0" xbr="9" ybr="3" group_id="3"/>', 0, 255,
     [("box", (6, 0, 9, 3, 0, (0, 0)))]),
    ('<polygon label="_background_" points="14,10;19,10;19,15"/>', 0, 0,
     [("polygon", [(14, 10), (19, 10), (19, 15)])]),
    ('<box label="road" xtl="2" ytl="2" xbr="4" ybr="4" group_id="7"/>', 0, 5,
     [("box", (2, 2, 4, 4, 0, (0, 0)))]),
    ('<polygon label="car" points="16,0;19,0;19,3" group_id="7"/>', 0, 5,
     [("polygon", [(16, 0), (19, 0), (19, 3)])]),
]  # fmt: skip


def write_cvat(tmp: Path, elements=CVAT_ELEMENTS) -> Path:
    write_image(tmp / "images" / "a.jpg", 20, 16)
    shapes = "".join(
        xml.replace("/>", f' z_order="{z}"/>') if "z_order" not in xml else xml
        for xml, z, _, _ in elements
    )
    body = f'<image id="0" name="a.jpg" width="20" height="16">{shapes}</image>'
    path = tmp / "annotations.xml"
    path.write_text(f"<annotations><version>1.1</version>{body}</annotations>")
    return path


def cvat_expected(elements=CVAT_ELEMENTS) -> np.ndarray:
    order = sorted(range(len(elements)), key=lambda k: (elements[k][1], k))  # z_order, file
    regions = [(kind, p, elements[k][2]) for k in order for kind, p in elements[k][3]]
    return composite(regions, 16, 20)


def test_cvat_instances_follow_groups_and_z_order(tmp_path):
    path = write_cvat(tmp_path)
    ds, plain = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    np.testing.assert_array_equal(read_png(ds / "instances" / "a.png"), cvat_expected())
    check_agrees_with_class_mask(ds, plain, "a")
    classes = json.loads((ds / "rasterize_report.json").read_text())["classes"]
    # Objects count under their first shape drawn: the mixed group 7 is a road.
    assert (classes["car"]["objects"], classes["road"]["objects"]) == (2, 3)


def test_cvat_group_id_0_is_no_group_and_the_mask_is_a_voc_palette_png(tmp_path):
    # CVAT writes group_id="0" on ungrouped shapes: each is an object of its own.
    elements = [
        ('<box label="car" xtl="1" ytl="1" xbr="4" ybr="4" group_id="0"/>', 0, 1,
         [("box", (1, 1, 4, 4, 0, (0, 0)))]),
        ('<box label="car" xtl="8" ytl="8" xbr="12" ybr="12" group_id="0"/>', 0, 2,
         [("box", (8, 8, 12, 12, 0, (0, 0)))]),
    ]  # fmt: skip
    path = write_cvat(tmp_path, elements)
    ds, _ = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    np.testing.assert_array_equal(read_png(ds / "instances" / "a.png"), cvat_expected(elements))
    with Image.open(ds / "instances" / "a.png") as image:
        assert image.mode == "P"
        palette = image.getpalette()
    # VOC's colours, as labelme writes SegmentationObject: 1 dark red, 255 (ignore) void.
    assert palette[3:6] == [128, 0, 0] and palette[255 * 3 : 256 * 3] == [224, 224, 192]


def test_cli_writes_cvat_instances_and_counts_objects(tmp_path):
    path = write_cvat(tmp_path)
    labels = labels_file(tmp_path)
    args = ["rasterize", path, tmp_path / "ds", "--labels", labels, "--instances", "--jobs", "1"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "objects" in result.output
    np.testing.assert_array_equal(
        read_png(tmp_path / "ds" / "instances" / "a.png"), cvat_expected()
    )
    again = invoke([*args, "--overwrite"])  # replaced through the same build-and-swap
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "classes.json",
        "images",
        "instances",
        "masks",
        "rasterize_report.json",
    ]


# --- VIA (1.x, 2.x and 3): one region, one instance ----------------------------------------------------------


def via_file(tmp: Path, regions: list[tuple[dict, str]], size=(20, 16)) -> Path:
    write_image(tmp / "a.jpg", *size)
    doc = {
        "a.jpg1": {
            "filename": "a.jpg",
            "size": 1,
            "file_attributes": {},
            "regions": [
                {"shape_attributes": attrs, "region_attributes": {"class": label}}
                for attrs, label in regions
            ],
        }
    }
    path = tmp / "via.json"
    path.write_text(json.dumps(doc))
    return path


def test_via_regions_are_instances_in_file_order(tmp_path):
    poly = {"name": "polygon", "all_points_x": [0, 12, 12, 0], "all_points_y": [0, 0, 9, 9]}
    regions = [
        (poly, "road"),
        ({"name": "rect", "x": 4, "y": 3, "width": 10, "height": 8}, "car"),
        ({"name": "circle", "cx": 10, "cy": 10, "r": 4}, "car"),
        ({"name": "rect", "x": 8, "y": 8, "width": 3, "height": 3}, "__ignore__"),
        ({"name": "point", "cx": 17, "cy": 3}, "road"),
    ]
    path = via_file(tmp_path, regions)
    ds, plain = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    expected = composite(
        [
            ("polygon", [(0, 0), (12, 0), (12, 9), (0, 9)], 1),
            ("box", (4, 3, 14, 11, 0, (0, 0)), 2),
            ("circle", (10, 10, 4), 3),
            ("box", (8, 8, 11, 11, 0, (0, 0)), 255),
            ("point", (17, 3), 4),
        ],
        16,
        20,
    )
    np.testing.assert_array_equal(read_png(ds / "instances" / "a.png"), expected)
    check_agrees_with_class_mask(ds, plain, "a")
    classes = json.loads((ds / "rasterize_report.json").read_text())["classes"]
    assert (classes["car"]["objects"], classes["road"]["objects"]) == (2, 2)


def test_past_254_objects_the_mask_is_16_bit_with_ignore_65535(tmp_path):
    rects = [
        ({"name": "rect", "x": k % 40, "y": k // 40, "width": 0, "height": 0}, "car")
        for k in range(300)
    ]
    rects.append(({"name": "rect", "x": 0, "y": 0, "width": 1, "height": 0}, "__ignore__"))
    path = via_file(tmp_path, rects, size=(40, 9))
    ds, plain = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    ids = read_png(ds / "instances" / "a.png")
    expected = np.zeros((9, 40), np.uint16)
    expected.ravel()[:300] = np.arange(1, 301)
    expected[0, :2] = 65535
    np.testing.assert_array_equal(ids, expected)
    assert ids.dtype == np.uint16
    check_agrees_with_class_mask(ds, plain, "a", ignore=65535)
    report = json.loads((ds / "rasterize_report.json").read_text())
    assert report["classes"]["car"]["objects"] == 300


def test_via3_regions_are_instances_in_file_order(tmp_path):
    from tests.test_source_via3 import OPTION, project

    write_image(tmp_path / "a.jpg", 20, 16)
    regions = [
        ([7, 0, 0, 12, 0, 12, 9, 0, 9], "road"),
        ([2, 4, 3, 10, 8], "car"),
        ([3, 10, 10, 4], "car"),
    ]
    doc = project({"a.jpg": [(xy, {"1": OPTION[label]}) for xy, label in regions]})
    path = tmp_path / "via_project.json"
    path.write_text(json.dumps(doc))
    ds, plain = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    expected = composite(
        [
            ("polygon", [(0, 0), (12, 0), (12, 9), (0, 9)], 1),
            ("box", (4, 3, 14, 11, 0, (0, 0)), 2),
            ("circle", (10, 10, 4), 3),
        ],
        16,
        20,
    )
    np.testing.assert_array_equal(read_png(ds / "instances" / "a.png"), expected)
    check_agrees_with_class_mask(ds, plain, "a")


@pytest.mark.parametrize(("n", "dtype", "ignore"), [(254, np.uint8, 255), (255, np.uint16, 65535)])
def test_255_is_never_an_object_id_in_an_8_bit_mask(n, dtype, ignore):
    shapes = [Shape("car", "rectangle", ((k, 0), (k, 0))) for k in range(n)]
    shapes.append(Shape("__ignore__", "rectangle", ((n, 0), (n, 0))))
    ids, labels = draw_objects(shapes, 1, n + 1)
    assert ids.dtype == dtype and len(labels) == n
    assert ids[0].tolist() == [*range(1, n + 1), ignore]


def test_too_many_objects_is_a_clear_error():
    shapes = [Shape("car", "point", ((0, 0),))] * (MAX_OBJECTS + 1)
    with pytest.raises(ValueError, match="65535 objects do not fit a 16-bit instance mask"):
        draw_objects(shapes, 2, 2)


# --- Label Studio: the results sharing one id are one region --------------------------------


def ls_export(tmp: Path, results: list[dict]) -> Path:
    write_image(tmp / "a.jpg", 20, 16)
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/a.jpg"},
        "annotations": [{"result": results}],
    }
    path = tmp / "export.json"
    path.write_text(json.dumps([task]))
    return path


def ls_result(rid: str | None, kind: str, label: str, **value) -> dict:
    result = {"type": kind, "original_width": 20, "original_height": 16}
    result["value"] = {**value, kind: [label]}
    return result if rid is None else {**result, "id": rid}


def percent(points):
    """Pixel points of the 20 x 16 image as Label Studio's percentages."""
    return [[x * 5, y * 6.25] for x, y in points]


def test_labelstudio_results_sharing_an_id_are_one_instance(tmp_path):
    a = [(0, 0), (12, 0), (12, 10), (0, 10)]
    b = [(14, 1), (19, 1), (19, 6)]
    c = [(2, 8), (10, 8), (10, 15)]
    results = [
        ls_result("r1", "polygonlabels", "car", points=percent(a)),
        {"id": "r1", "type": "textarea", "value": {"text": ["dented"]}},
        ls_result("r2", "rectanglelabels", "road", x=20, y=25, width=40, height=50),
        ls_result("r1", "polygonlabels", "car", points=percent(b)),  # part of region r1
        ls_result(None, "polygonlabels", "road", points=percent(c)),
    ]
    path = ls_export(tmp_path, results)
    ds, plain = both_masks(tmp_path, path, labels=labels_file(tmp_path))
    expected = composite(
        [
            ("polygon", a, 1),
            ("box", (4, 4, 12, 12, 0, (0, 0)), 2),
            ("polygon", b, 1),
            ("polygon", c, 3),
        ],
        16,
        20,
    )
    np.testing.assert_array_equal(read_png(ds / "instances" / "a.png"), expected)
    check_agrees_with_class_mask(ds, plain, "a")
    classes = json.loads((ds / "rasterize_report.json").read_text())["classes"]
    assert (classes["car"]["objects"], classes["road"]["objects"]) == (1, 2)
