"""rasterize --multilabel and --instances: hand tables, per-shape references, the report."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from segtool.core.errors import SegtoolError
from segtool.core.multilabel import decode, read_multilabel_mask, read_multilabel_values
from segtool.rasterize.draw import draw_instances, draw_multilabel
from segtool.rasterize.folder import rasterize_dir
from segtool.sources.shapes import Shape
from tests.conftest import read_png, shape, write_labelme


def shape_mask(s: Shape, height: int, width: int) -> np.ndarray:
    """One shape on its own canvas, as labelme's shape_to_mask draws it."""
    canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    xy = [tuple(p) for p in s.points]
    if s.shape_type == "circle":
        (cx, cy), (px, py) = xy
        d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
    elif s.shape_type == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1, fill=1)
    elif s.shape_type == "line":
        draw.line(xy=xy, fill=1, width=10)
    elif s.shape_type == "linestrip":
        draw.line(xy=xy, fill=1, width=10, joint="curve")
    elif s.shape_type == "point":
        (cx, cy), r = xy[0], 5
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


coord = st.floats(-20, 60, allow_nan=False).map(lambda v: round(v, 1)) | st.integers(-20, 60)
point = st.tuples(coord, coord)
KINDS = {
    "polygon": st.lists(point, min_size=3, max_size=7),
    "rectangle": st.lists(point, min_size=2, max_size=2),
    "circle": st.lists(point, min_size=2, max_size=2),
    "line": st.lists(point, min_size=2, max_size=2),
    "linestrip": st.lists(point, min_size=2, max_size=5),
    "point": st.lists(point, min_size=1, max_size=1),
}


def random_shapes(labels: list[str], groups: list[int | None]):
    one = st.one_of(
        [
            st.builds(
                Shape,
                st.sampled_from(labels),
                st.just(kind),
                pts.map(tuple),
                st.none(),
                st.sampled_from(groups),
            )
            for kind, pts in KINDS.items()
        ]
    )
    return st.lists(one, min_size=1, max_size=10)


# --- hand table -----------------------------------------------------------------------------


def test_3x3_hand_table_keeps_both_overlapping_classes(tmp_path):
    # a: pixels x 0..1, y 0..1; b: pixels x 1..2, y 1..2; they share the centre pixel.
    write_labelme(
        tmp_path / "ann",
        "img",
        [
            shape("a", [[0, 0], [1, 1]], "rectangle"),
            shape("b", [[1, 1], [2, 2]], "rectangle"),
        ],
        size=(3, 3),
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("_background_\na\nb\n")
    report = rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels, multilabel=True)
    values = read_multilabel_values(tmp_path / "ds" / "masks" / "img.png", 3)
    assert values.tolist() == [[1, 1, 0], [1, 3, 2], [0, 2, 2]]
    planes, ignore = read_multilabel_mask(tmp_path / "ds" / "masks" / "img.png", 3)
    assert planes[0].sum() == 4 and planes[1].sum() == 4 and not ignore.any()
    doc = json.loads((tmp_path / "ds" / "rasterize_report.json").read_text())
    assert doc == report.to_json()
    assert doc["multilabel"] is True
    assert {n: c["pixels"] for n, c in doc["classes"].items()} == {
        "_background_": 2,
        "a": 4,
        "b": 4,
    }
    assert doc["overlaps"] == [{"classes": ["a", "b"], "pixels": 1}]
    classes = json.loads((tmp_path / "ds" / "classes.json").read_text())
    assert classes["multilabel"] is True and classes["ignore_index"] == 128
    # The exclusive path keeps only the later shape in the centre.
    rasterize_dir(tmp_path / "ann", tmp_path / "ex", labels=labels)
    assert read_png(tmp_path / "ex" / "masks" / "img.png").tolist() == [
        [1, 1, 0],
        [1, 2, 2],
        [0, 2, 2],
    ]


# --- each plane against the union of per-shape references -----------------------------------


@settings(max_examples=150, deadline=None)
@given(shapes=random_shapes(["a", "b", "__ignore__"], [None]), w=st.integers(1, 48))
def test_each_plane_is_the_union_of_its_shapes(shapes, w):
    h = 37
    values = draw_multilabel(shapes, h, w, {"a": 1, "b": 2}, 2)
    planes, ignore = decode(values, 2)
    for index, label in enumerate(["a", "b"]):
        expected = np.zeros((h, w), dtype=bool)
        for s in shapes:
            if s.label == label:
                expected |= shape_mask(s, h, w)
        np.testing.assert_array_equal(planes[index], expected)
    expected_ignore = np.zeros((h, w), dtype=bool)
    for s in shapes:
        if s.label == "__ignore__":
            expected_ignore |= shape_mask(s, h, w)
    np.testing.assert_array_equal(ignore, expected_ignore)


@pytest.mark.parametrize("num_foreground", [12, 40])
def test_deep_masks_put_each_class_on_its_bit(num_foreground):
    rng = np.random.default_rng(num_foreground)
    labels = [f"c{i}" for i in range(1, num_foreground + 1)]
    shapes = [
        Shape(
            labels[i % num_foreground], "rectangle", tuple(map(tuple, rng.integers(0, 30, (2, 2))))
        )
        for i in range(2 * num_foreground)
    ] + [Shape("__ignore__", "point", ((3.0, 4.0),))]
    values = draw_multilabel(
        shapes, 30, 30, {n: i for i, n in enumerate(labels, 1)}, num_foreground
    )
    planes, ignore = decode(values, num_foreground)
    for c, label in enumerate(labels):
        expected = np.zeros((30, 30), dtype=bool)
        for s in shapes:
            if s.label == label:
                expected |= shape_mask(s, 30, 30)
        np.testing.assert_array_equal(planes[c], expected)
    np.testing.assert_array_equal(ignore, shape_mask(shapes[-1], 30, 30))


# --- instances ------------------------------------------------------------------------------


def labelme_instances(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    """labelme's shapes_to_label + labelme2voc: (label, group_id) objects in order of first
    appearance (a fresh uuid for a missing group_id), later shapes win, ignore pixels 0."""
    cls = np.zeros((height, width), dtype=np.int32)
    ins = np.zeros_like(cls)
    instances = []
    for s in shapes:
        instance = (s.label, s.group_id if s.group_id is not None else uuid.uuid1())
        if instance not in instances:
            instances.append(instance)
        mask = shape_mask(s, height, width)
        cls[mask] = -1 if s.label == "__ignore__" else 1
        ins[mask] = instances.index(instance) + 1
    ins[cls == -1] = 0
    return ins


@settings(max_examples=150, deadline=None)
@given(shapes=random_shapes(["a", "b", "__ignore__"], [None, 1, 2, 7]))
def test_instances_match_labelme(shapes):
    ids, objects = draw_instances(shapes, 33, 41)
    np.testing.assert_array_equal(ids, labelme_instances(shapes, 33, 41))
    assert len({(label, g) for label, g in objects if g is not None}) == len(
        [o for o in objects if o[1] is not None]
    )


def test_group_id_joins_shapes_of_one_label_only():
    shapes = [
        Shape("a", "rectangle", ((0, 0), (1, 1)), group_id=5),
        Shape("b", "rectangle", ((3, 0), (4, 1)), group_id=5),  # same group, other label
        Shape("a", "rectangle", ((6, 0), (7, 1)), group_id=5),  # joins the first
        Shape("a", "rectangle", ((0, 3), (1, 4))),  # no group: its own object
    ]
    ids, objects = draw_instances(shapes, 5, 8)
    assert objects == [("a", 5), ("b", 5), ("a", None)]
    assert ids[0].tolist() == [1, 1, 0, 2, 2, 0, 1, 1]
    assert ids[3].tolist() == [3, 3, 0, 0, 0, 0, 0, 0]


def test_rasterize_instances_and_object_counts(tmp_path):
    shapes = [shape("cat", [[i * 3, 0], [i * 3 + 1, 1]], "rectangle") for i in range(300)]
    shapes += [
        shape("dog", [[0, 5], [3, 8]], "rectangle", group_id=1),
        shape("dog", [[6, 5], [9, 8]], "rectangle", group_id=1),
        shape("__ignore__", [[0, 5], [1, 6]], "rectangle"),
    ]
    write_labelme(tmp_path / "ann", "many", shapes, size=(900, 10))
    write_labelme(tmp_path / "ann", "few", shapes[:2], size=(900, 10))
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n")
    report = rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels, instances=True)
    many = read_png(tmp_path / "ds" / "instances" / "many.png")
    few = read_png(tmp_path / "ds" / "instances" / "few.png")
    assert many.dtype == np.uint16 and few.dtype == np.uint8
    assert many[0, 3 * 299] == 300 and many[5, 9] == 301 and many[5, 0] == 0
    assert few[0].tolist()[:5] == [1, 1, 0, 2, 2]
    with Image.open(tmp_path / "ds" / "instances" / "few.png") as img:
        assert img.mode == "P"
    doc = report.to_json()
    assert doc["classes"]["cat"]["objects"] == 302 and doc["classes"]["dog"]["objects"] == 1
    assert "overlaps" not in doc


# --- bad input ------------------------------------------------------------------------------


def test_more_than_63_classes_is_a_clear_error(tmp_path):
    write_labelme(tmp_path / "ann", "img", [shape("c1", [[0, 0], [1, 1]], "rectangle")])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["_background_", *(f"c{i}" for i in range(1, 65))]))
    with pytest.raises(SegtoolError, match=r"labels.txt: 64 foreground classes .* \(63\)"):
        rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels, multilabel=True)
    assert not (tmp_path / "ds").exists()


def test_bad_group_id_names_the_file(tmp_path):
    write_labelme(
        tmp_path / "ann", "img", [shape("a", [[0, 0], [1, 1]], "rectangle", group_id="x")]
    )
    with pytest.raises(SegtoolError, match=r"img.json: shape 0 \('a'\): group_id 'x' is not"):
        rasterize_dir(tmp_path / "ann", tmp_path / "ds", instances=True)


def test_preview_needs_multilabel_and_blends(tmp_path):
    write_labelme(
        tmp_path / "ann",
        "img",
        [shape("a", [[0, 0], [1, 1]], "rectangle"), shape("b", [[1, 1], [2, 2]], "rectangle")],
        size=(3, 3),
    )
    with pytest.raises(SegtoolError, match="--preview draws multi-label masks; add --multilabel"):
        rasterize_dir(tmp_path / "ann", tmp_path / "ds", previews=True)
    report = rasterize_dir(tmp_path / "ann", tmp_path / "ds", multilabel=True, previews=True)
    rgb = read_png(tmp_path / "ds" / "previews" / "img.png")
    a, b = (np.array(report.class_map.colors[i]) for i in (1, 2))
    assert rgb[0, 0].tolist() == a.tolist() and rgb[2, 2].tolist() == b.tolist()
    assert rgb[1, 1].tolist() == np.rint((a + b) / 2).astype(int).tolist()


def test_cli_prints_overlaps_and_objects(tmp_path):

    from tests.cli import invoke

    write_labelme(
        tmp_path / "ann",
        "img",
        [
            shape("a", [[0, 0], [1, 1]], "rectangle", group_id=3),
            shape("b", [[1, 1], [2, 2]], "rectangle"),
        ],
        size=(3, 3),
    )
    args = ["rasterize", str(tmp_path / "ann"), str(tmp_path / "ds"), "--multilabel"]
    result = invoke([*args, "--instances"])
    assert result.exit_code == 0, result.output
    assert "overlapping pixels per class pair" in result.output
    assert "a & b" in result.output and "objects" in result.output
    assert (tmp_path / "ds" / "instances" / "img.png").is_file()


def test_coco_export_multilabel_planes_match_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    from tests.test_rasterize_exports import coco_doc, coco_tree

    doc = coco_doc()
    path = coco_tree(tmp_path, doc)
    report = rasterize_dir(
        path, tmp_path / "ds", image_dir=tmp_path / "pics", multilabel=True, previews=True, jobs=1
    )
    assert report.class_map.names == ("_background_", "car", "road")
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    bit_of = {2: 0, 1: 1}  # category id -> bit (car is class 1, road class 2)
    both = 0
    for img in doc["images"]:
        planes = np.zeros((2, img["height"], img["width"]), dtype=bool)
        ignore = np.zeros((img["height"], img["width"]), dtype=bool)
        for ann in coco.imgToAnns[img["id"]]:
            inside = coco.annToMask(ann) > 0
            if ann.get("iscrowd"):
                ignore |= inside
            else:
                planes[bit_of[ann["category_id"]]] |= inside
        stem = img["file_name"].split("/")[-1].rsplit(".", 1)[0]
        got_planes, got_ignore = read_multilabel_mask(tmp_path / "ds" / "masks" / f"{stem}.png", 3)
        np.testing.assert_array_equal(got_planes, planes)
        np.testing.assert_array_equal(got_ignore, ignore)
        assert (tmp_path / "ds" / "previews" / f"{stem}.png").is_file()
        both += int((planes[0] & planes[1]).sum())
    assert both > 0
    assert report.to_json()["overlaps"] == [{"classes": ["car", "road"], "pixels": both}]
    # Instance masks of an export are the same with a multi-label class map.
    from tests.test_rasterize_instances import coco_reference

    rasterize_dir(
        path, tmp_path / "d2", image_dir=tmp_path / "pics", multilabel=True, instances=True, jobs=1
    )
    for img in doc["images"]:
        stem = img["file_name"].split("/")[-1].rsplit(".", 1)[0]
        ids = read_png(tmp_path / "d2" / "instances" / f"{stem}.png")
        np.testing.assert_array_equal(ids, coco_reference(doc)[img["id"]])


def test_split_counts_the_pixels_of_each_overlapping_class(tmp_path):
    from segtool.split.assign import split_dataset
    from tests.synthetic import make_multilabel_dataset

    dataset = make_multilabel_dataset(tmp_path / "ds", n=6)
    (dataset / "split.json").unlink()
    result = split_dataset(dataset, val=0.3, test=0.3, jobs=1)
    totals = sum(result.pixels.values())
    planes = np.zeros(3, dtype=np.int64)
    for mask in sorted((dataset / "masks").glob("*.png")):
        bits, _ = read_multilabel_mask(mask, 3)
        planes += [int((~bits.any(axis=0)).sum()), int(bits[0].sum()), int(bits[1].sum())]
    assert totals.tolist() == planes.tolist()
