"""COCO reader: masks identical to the pycocotools loop, and every bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_shapes
from segtool.sources.coco import read_coco, rle_counts

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 9, "name": "background"}]
IDS = {"_background_": 0, "cat": 1, "dog": 2, "__ignore__": 255}


def reference_masks(doc: dict, ids_by_category: dict[int, int], crowd_value: int | None):
    """The loop COCO users write: per image, zeros, then each annotation in file order."""
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    out = {}
    for img in doc["images"]:
        mask = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in coco.imgToAnns[img["id"]]:
            value = ids_by_category[ann["category_id"]]
            if ann.get("iscrowd") and crowd_value is not None:
                value = crowd_value
            mask[coco.annToMask(ann) > 0] = value
        out[img["file_name"]] = mask
    return out


def draw(record) -> np.ndarray:
    return draw_shapes(record.shapes, record.height, record.width, IDS)


def write(tmp: Path, doc: dict) -> Path:
    path = tmp / "instances.json"
    path.write_text(json.dumps(doc))
    return path


coord = st.floats(min_value=-3, max_value=24, allow_nan=False).map(lambda v: round(v, 2))
polygon = st.lists(st.tuples(coord, coord), min_size=3, max_size=7).map(
    lambda pts: [v for p in pts for v in p]
)


@st.composite
def annotation(draw_, height: int, width: int):
    kind = draw_(st.sampled_from(["polygons", "rle", "rle-string"]))
    if kind == "polygons":
        segm = draw_(st.lists(polygon, min_size=1, max_size=3))
    else:
        bits = draw_(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
        binary = np.asfortranarray(np.array(bits, np.uint8).reshape(height, width))
        encoded = mask_utils.encode(binary)
        if kind == "rle":
            # Uncompressed RLE: the run lengths themselves, column by column.
            segm = {"size": [height, width], "counts": _uncompressed(binary.ravel(order="F"))}
        else:
            segm = {"size": [height, width], "counts": encoded["counts"].decode()}
    return {
        "category_id": draw_(st.sampled_from([7, 3, 9])),
        "iscrowd": draw_(st.sampled_from([0, 0, 0, 1])),
        "segmentation": segm,
    }


def _uncompressed(flat: np.ndarray) -> list[int]:
    runs, value, count = [], 0, 0
    for v in flat.tolist():
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    return runs


@st.composite
def coco_doc(draw_):
    images, anns = [], []
    for i in range(draw_(st.integers(1, 3))):
        h, w = draw_(st.integers(1, 20)), draw_(st.integers(1, 20))
        images.append({"id": i + 1, "file_name": f"img{i}.png", "height": h, "width": w})
        for _ in range(draw_(st.integers(0, 5))):
            ann = draw_(annotation(h, w))
            anns.append({**ann, "id": len(anns) + 1, "image_id": i + 1})
    order = draw_(st.permutations(range(len(anns))))  # annotations of images interleaved
    return {"images": images, "annotations": [anns[k] for k in order], "categories": CATEGORIES}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=coco_doc(), crowd=st.sampled_from(["ignore", "class"]))
def test_masks_match_the_pycocotools_loop(tmp_path, doc, crowd):
    records = read_coco(write(tmp_path, doc), crowd=crowd)
    assert [r.problem for r in records] == [None] * len(doc["images"])
    expected = reference_masks(doc, {7: 1, 3: 2, 9: 0}, 255 if crowd == "ignore" else None)
    for record in records:
        np.testing.assert_array_equal(draw(record), expected[record.name])


def test_later_annotations_overwrite_earlier_and_crowd_is_ignore(tmp_path):
    square = [[1, 1, 4, 1, 4, 4, 1, 4]]
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 6}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": square},
            # 2 x 2 foreground at rows 2-3 of column 2: 14 background, 2 fg, 20 background
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [6, 6], "counts": [14, 2, 20]},
            },
        ],
        "categories": CATEGORIES,
    }
    (record,) = read_coco(write(tmp_path, doc))
    mask = draw(record)
    assert mask[2, 2] == 255 and mask[3, 2] == 255  # the crowd region, drawn later
    assert mask[1, 1] == 1 and mask[0, 0] == 0
    assert record.shapes[1].label == "__ignore__"
    (record,) = read_coco(write(tmp_path, doc), crowd="class")
    assert draw(record)[2, 2] == 2


def slow_rle_counts(text: str) -> list[int]:
    """pycocotools' rleFrString, character by character (the reference)."""
    runs, p = [], 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    density=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_rle_counts_reads_what_pycocotools_writes(h, w, density, seed):
    rng = np.random.default_rng(seed)
    binary = np.asfortranarray((rng.random((h, w)) < density).astype(np.uint8))
    text = mask_utils.encode(binary)["counts"].decode()
    counts = rle_counts(text).tolist()
    assert counts == slow_rle_counts(text) == _uncompressed(binary.ravel(order="F"))


def test_damaged_rle_strings_are_refused():
    for text, why in (("5 ", "not part of"), ("6a", "ends inside"), ("o" * 9 + "1", "longer")):
        with pytest.raises(ValueError, match=why):
            rle_counts(text)


def test_image_dir_and_background_category(tmp_path):
    doc = {
        "images": [{"id": 1, "file_name": "sub/a.jpg", "height": 4, "width": 4}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "segmentation": [[0, 0, 3, 0, 3, 3]]}
        ],
        "categories": CATEGORIES,
    }
    (record,) = read_coco(write(tmp_path, doc), tmp_path / "pics")
    assert record.image == tmp_path / "pics" / "sub" / "a.jpg"
    assert record.shapes[0].label == "_background_"
    assert record.stem == "a"


# --- bad inputs: each one names the file and the region ------------------------------------

BASE_IMAGE = {"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}
TRIANGLE = [[0, 0, 5, 0, 5, 5]]


def problems(tmp_path, annotations, images=(BASE_IMAGE,)) -> list[str]:
    doc = {"images": list(images), "annotations": annotations, "categories": CATEGORIES}
    return [r.problem for r in read_coco(write(tmp_path, doc)) if r.problem]


@pytest.mark.parametrize(
    ("ann", "expected"),
    [
        ({"image_id": 1, "category_id": 99, "segmentation": TRIANGLE}, "category_id 99 matches no"),
        ({"image_id": 1, "category_id": 7, "segmentation": [[0, 0, 5, 0, 5]]}, "odd number"),
        ({"image_id": 1, "category_id": 7, "segmentation": [[0, 0, 5, 5]]}, "2 point"),
        ({"image_id": 1, "category_id": 7, "segmentation": []}, "box-only"),
        (
            {"image_id": 1, "category_id": 7, "segmentation": {"size": [10, 11], "counts": [110]}},
            "RLE size 10 x 11 disagrees with the image, 10 x 10",
        ),
        (
            {
                "image_id": 1,
                "category_id": 7,
                "segmentation": {"size": [10, 10], "counts": [50, 10]},
            },
            "add up to 60 pixels",
        ),
        (
            {"image_id": 1, "category_id": 7, "segmentation": {"size": [10, 10], "counts": "52"}},
            "add up to",
        ),
        ({"image_id": 5, "category_id": 7, "segmentation": TRIANGLE}, "image_id 5 matches no"),
    ],
)
def test_bad_annotations_are_named(tmp_path, ann, expected):
    found = problems(tmp_path, [{"id": 42, **ann}])
    assert len(found) == 1
    assert expected in found[0]
    assert "annotation 42" in found[0]


def test_file_name_escaping_the_image_folder(tmp_path):
    for name in ("../outside.jpg", "/etc/a.jpg", "C:\\x\\a.jpg", "a/../../b.jpg"):
        image = {**BASE_IMAGE, "file_name": name}
        (found,) = problems(tmp_path, [], images=[image])
        assert "image folder" in found or "absolute" in found


def test_duplicate_file_names_are_refused(tmp_path):
    doc = {
        "images": [BASE_IMAGE, {**BASE_IMAGE, "id": 2}],
        "annotations": [],
        "categories": CATEGORIES,
    }
    with pytest.raises(
        SegtoolError, match=r"instances.json: image 'a.jpg' \(id 2\): the same file_name"
    ):
        read_coco(write(tmp_path, doc))


def test_not_a_coco_file(tmp_path):
    with pytest.raises(SegtoolError, match="not a COCO instances file"):
        read_coco(write(tmp_path, {"shapes": []}))


@pytest.mark.parametrize(
    ("ann", "expected"),
    [
        ({"image_id": [1], "category_id": 7}, "image_id [1] matches no"),
        ({"image_id": 1, "category_id": {"id": 7}}, "category_id {'id': 7} matches no"),
        ({"image_id": 1, "category_id": [7]}, "category_id [7] matches no"),
    ],
)
def test_ids_that_are_lists_or_objects_match_nothing(tmp_path, ann, expected):
    (found,) = problems(tmp_path, [{"id": 42, "segmentation": TRIANGLE, **ann}])
    assert expected in found


def test_a_category_id_that_is_a_list_is_refused(tmp_path):
    doc = {"images": [BASE_IMAGE], "annotations": [], "categories": [{"id": [7], "name": "cat"}]}
    with pytest.raises(SegtoolError, match=r"categories\[0\] \('cat'\) has the id \[7\]"):
        read_coco(write(tmp_path, doc))


@pytest.mark.parametrize("far", [1e12, 1e300, -1e9, 10 + 1025])
def test_vertices_far_outside_the_image_are_refused(tmp_path, far):
    """pycocotools walks each edge in C ints at 5x: such a vertex crashes the process."""
    ann = {"id": 42, "image_id": 1, "category_id": 7, "segmentation": [[0, 0, far, 0, 5, 5]]}
    (found,) = problems(tmp_path, [ann])
    assert "polygon 0: vertex" in found and "far outside the 10 x 10 image" in found


def test_vertices_outside_the_image_within_reach_match_pycocotools(tmp_path):
    doc = {
        "images": [BASE_IMAGE],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[-900, -3, 1030, 4, 5, 9]]}
        ],
        "categories": CATEGORIES,
    }
    (record,) = read_coco(write(tmp_path, doc))
    assert record.problem is None
    expected = reference_masks(doc, {7: 1, 3: 2, 9: 0}, None)["a.jpg"]
    np.testing.assert_array_equal(draw(record), expected)


def test_a_category_id_written_as_a_string_names_the_number(tmp_path):
    ann = {"id": 42, "image_id": 1, "category_id": "7", "segmentation": TRIANGLE}
    (found,) = problems(tmp_path, [ann])
    assert "category_id '7' matches no category (the category's id is 7" in found


def test_an_integer_too_large_for_a_float_is_named(tmp_path):
    ann = {"id": 42, "image_id": 1, "category_id": 7, "segmentation": [[0, 0, 10**400, 0, 5, 5]]}
    (found,) = problems(tmp_path, [ann])
    assert "polygon 0 is not a flat list of finite numbers" in found


def test_an_image_id_written_as_a_string_names_the_number(tmp_path):
    ann = {"id": 42, "image_id": "1", "category_id": 7, "segmentation": TRIANGLE}
    (found,) = problems(tmp_path, [ann])
    assert "image_id '1' matches no entry in \"images\" (image 1: a number and a string" in found


def test_iscrowd_written_as_a_json_boolean_is_read(tmp_path):
    """COCO Annotator writes ``"iscrowd": false``; pycocotools reads it as 0."""
    square = {"size": [6, 6], "counts": [14, 2, 20]}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 4, 1, 4, 4]]},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": square},
    ]
    image = {"id": 1, "file_name": "a.jpg", "height": 6, "width": 6}
    masks = {}
    for spelling in (0, False, 1, True):
        doc = {
            "images": [image],
            "annotations": [anns[0], {**anns[1], "iscrowd": spelling}],
            "categories": CATEGORIES,
        }
        (record,) = read_coco(write(tmp_path, doc))
        assert record.problem is None
        masks[spelling] = draw(record)
        expected = reference_masks(doc, {7: 1, 3: 2, 9: 0}, 255)["a.jpg"]
        np.testing.assert_array_equal(masks[spelling], expected)  # pycocotools agrees
    assert masks[0][2, 2] == 2 and masks[1][2, 2] == 255


@pytest.mark.parametrize(
    ("value", "shown"), [("yes", '"yes"'), (None, "null"), (2, "2"), ([1], "[1]")]
)
def test_a_bad_iscrowd_is_shown_as_the_file_spells_it(tmp_path, value, shown):
    ann = {"id": 42, "image_id": 1, "category_id": 7, "segmentation": TRIANGLE, "iscrowd": value}
    (found,) = problems(tmp_path, [ann])
    assert f"annotation 42: iscrowd {shown} is not 0 or 1 (or false or true)" in found


def test_the_command_lists_each_bad_annotation_once(tmp_path):
    """An export with 12 bad annotations (iscrowd null, one an image): the error line names 5,
    the lines below it the other 7; each annotation is named exactly once, as the file
    spells its value."""
    from tests.cli import invoke

    images = [{"id": i, "file_name": f"{i}.jpg", "height": 6, "width": 6} for i in range(12)]
    anns = [
        {"id": 100 + i, "image_id": i, "category_id": 7, "segmentation": TRIANGLE, "iscrowd": None}
        for i in range(12)
    ]
    doc = {"images": images, "annotations": anns, "categories": CATEGORIES}
    result = invoke(["rasterize", write(tmp_path, doc), tmp_path / "out"])
    assert result.exit_code == 1 and not (tmp_path / "out").exists()
    assert result.stderr.count("error:") == 1
    assert result.stderr.count("iscrowd null is not 0 or 1") == 12
    for i in range(12):
        assert result.stderr.count(f"annotation {100 + i}: iscrowd") == 1
