"""Rasterization: hand tables per shape type, labelme's per-shape method as oracle, folders."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from segtool.core.classes import make_class_map, read_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import MaskRows
from segtool.rasterize import draw
from segtool.rasterize.draw import draw_rows, draw_shapes
from segtool.rasterize.folder import rasterize_dir, rasterize_file
from segtool.sources import labelme
from segtool.sources.labelme import SHAPE_POINTS
from segtool.sources.shapes import AnnotationError, Shape
from tests.conftest import image_b64, read_png, shape, write_image, write_labelme

VALUES = {"a": 1, "b": 2, "__ignore__": 255}


def grid(rows: str) -> np.ndarray:
    """A label array from a picture: '.' = 0, digits = ids, '#' = 255."""
    table = {".": 0, "#": 255}
    return np.array([[table[c] if c in table else int(c) for c in row] for row in rows.split()])


# --- hand tables ---------------------------------------------------------------------------


def test_polygon_includes_its_outline():
    mask = draw_shapes([Shape("a", "polygon", ((1, 1), (5, 1), (1, 5)))], 7, 7, VALUES)
    expected = grid(""".......
                       .11111.
                       .1111..
                       .111...
                       .11....
                       .1.....
                       .......""")
    np.testing.assert_array_equal(mask, expected)


def test_rectangle_corners_in_any_order_and_later_shapes_win():
    shapes = [
        Shape("a", "rectangle", ((4, 3), (1, 1))),  # corners given bottom-right first
        Shape("b", "polygon", ((2, 2), (6, 2), (6, 4), (2, 4))),
        Shape("__ignore__", "rectangle", ((0, 0), (0, 0))),
    ]
    expected = grid("""#.......
                       .1111...
                       .122222.
                       .122222.
                       ..22222.
                       ........""")
    np.testing.assert_array_equal(draw_shapes(shapes, 6, 8, VALUES), expected)


def test_circle_radius_is_distance_to_rim_point():
    mask = draw_shapes([Shape("a", "circle", ((5, 5), (5, 2)))], 11, 11, VALUES)
    expected = grid("""...........
                       ...........
                       ....111....
                       ...11111...
                       ..1111111..
                       ..1111111..
                       ..1111111..
                       ...11111...
                       ....111....
                       ...........
                       ...........""")
    np.testing.assert_array_equal(mask, expected)


def test_point_is_a_disk_of_radius_5():
    mask = draw_shapes([Shape("a", "point", ((5, 5),))], 12, 12, VALUES)
    assert mask[5].tolist() == [1] * 11 + [0]  # 11 pixels across: centre ± 5
    assert mask[:, 5].tolist() == [1] * 11 + [0]
    assert mask[0].tolist() == [0, 0, 0] + [1] * 5 + [0] * 4
    assert mask.sum() == 97


def test_line_is_10_pixels_wide():
    mask = draw_shapes([Shape("a", "line", ((1, 6), (12, 6)))], 14, 14, VALUES)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    assert rows.tolist() == list(range(2, 12))  # 10 rows around y = 6
    assert cols.tolist() == list(range(1, 13))  # x from 1 to 12
    assert mask.sum() == 120


def test_oriented_rectangle_is_its_four_point_polygon():
    pts = ((2, 0), (5, 3), (3, 5), (0, 2))
    a = draw_shapes([Shape("a", "oriented_rectangle", pts)], 6, 6, VALUES)
    b = draw_shapes([Shape("a", "polygon", pts)], 6, 6, VALUES)
    np.testing.assert_array_equal(a, b)
    expected = grid("""..1...
                       .111..
                       11111.
                       .11111
                       ..111.
                       ...1..""")
    np.testing.assert_array_equal(a, expected)


def _patch(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=bool)


def test_mask_patch_at_rounded_first_point_and_clipped():
    patch = _patch([[1, 1, 1], [1, 0, 1]])
    # 1.5 rounds to 2 and 0.5 rounds to 0 (half to even, as numpy rounds).
    shapes = [Shape("a", "mask", ((1.5, 0.5), (9.3, 9.7)), mask=patch)]
    expected = grid("""..111
                       ..1.1
                       .....""")
    np.testing.assert_array_equal(draw_shapes(shapes, 3, 5, VALUES), expected)
    # Partly outside the image: clipped on every side.
    shapes = [Shape("a", "mask", ((-1.2, 2.0), (1.6, 3.1)), mask=patch)]
    expected = grid("""...
                       ...
                       11.""")
    np.testing.assert_array_equal(draw_shapes(shapes, 3, 3, VALUES), expected)


def test_legacy_mask_with_whole_number_points_is_cropped():
    patch = _patch([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    shapes = [Shape("b", "mask", ((1, 1), (2, 1)), mask=patch)]  # 2 x 1 patch kept
    expected = grid("""....
                       .22.
                       ....""")
    np.testing.assert_array_equal(draw_shapes(shapes, 3, 4, VALUES), expected)


# --- labelme's own method as oracle ---------------------------------------------------------


def labelme_reference(shapes: list[Shape], height: int, width: int, values: dict) -> np.ndarray:
    """labelme's shapes_to_label: one full-size canvas per shape, then assignment in order."""
    cls = np.zeros((height, width), dtype=np.int32)
    for s in shapes:
        canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
        draw = ImageDraw.Draw(canvas)
        xy = [tuple(p) for p in s.points]
        if s.shape_type == "circle":
            (cx, cy), (px, py) = xy
            d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
        elif s.shape_type == "rectangle":
            (x1, y1), (x2, y2) = xy
            box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
            draw.rectangle(box, outline=1, fill=1)
        elif s.shape_type == "line":
            draw.line(xy=xy, fill=1, width=10)
        elif s.shape_type == "linestrip":
            draw.line(xy=xy, fill=1, width=10, joint="curve")
        elif s.shape_type == "point":
            (cx, cy), r = xy[0], 5
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
        else:
            draw.polygon(xy=xy, outline=1, fill=1)
        mask = np.array(canvas, dtype=bool)
        cls[mask] = values[s.label]
    return cls


coord = st.floats(-20, 80, allow_nan=False).map(lambda v: round(v, 1)) | st.integers(-20, 80)
point = st.tuples(coord, coord)
shape_kinds = {
    "polygon": st.lists(point, min_size=3, max_size=8),
    "oriented_rectangle": st.lists(point, min_size=4, max_size=4),
    "rectangle": st.lists(point, min_size=2, max_size=2),
    "circle": st.lists(point, min_size=2, max_size=2),
    "line": st.lists(point, min_size=2, max_size=2),
    "linestrip": st.lists(point, min_size=2, max_size=6),
    "point": st.lists(point, min_size=1, max_size=1),
}
random_shape = st.one_of(
    [
        st.builds(Shape, st.sampled_from(["a", "b", "__ignore__"]), st.just(kind), pts.map(tuple))
        for kind, pts in shape_kinds.items()
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    shapes=st.lists(random_shape, min_size=1, max_size=12),
    w=st.integers(1, 64),
    h=st.integers(1, 64),
)
def test_one_canvas_matches_labelme_per_shape_canvases(shapes, w, h):
    np.testing.assert_array_equal(
        draw_shapes(shapes, h, w, VALUES), labelme_reference(shapes, h, w, VALUES)
    )


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(random_shape, min_size=1, max_size=8))
def test_16_bit_canvas_matches_labelme(shapes):
    values = {"a": 300, "b": 65000, "__ignore__": 65535}
    mask = draw_shapes(shapes, 40, 50, values, wide=True)
    assert mask.dtype == np.uint16
    np.testing.assert_array_equal(mask, labelme_reference(shapes, 40, 50, values))


mask_shape = st.builds(
    lambda label, x, y, patch: Shape(label, "mask", ((x, y), (x + 0.5, y + 0.5)), mask=patch),
    st.sampled_from(["a", "b", "__ignore__"]),
    coord,
    coord,
    st.integers(1, 30)
    .flatmap(
        lambda n: st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=9)
    )
    .map(lambda rows: np.array(rows, dtype=bool)),
)


def rows_pixels(rows: MaskRows, height: int, width: int) -> np.ndarray:
    """The pixels of PNG rows, checking that every row's filter byte is 0 (no filter)."""
    assert (rows.width, rows.height) == (width, height)
    table = np.frombuffer(rows.data, dtype=np.uint8).reshape(height, width + 1)
    assert not table[:, 0].any()
    return table[:, 1:]


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(random_shape | mask_shape, min_size=1, max_size=10),
    w=st.integers(1, 64),
    h=st.integers(1, 64),
)
def test_rows_drawn_in_place_hold_the_canvas_pixels(shapes, w, h):
    rows = draw_rows(shapes, h, w, VALUES)
    assert len(rows.data) == h * (w + 1)
    np.testing.assert_array_equal(rows_pixels(rows, h, w), draw_shapes(shapes, h, w, VALUES))


def _some_shapes() -> list[Shape]:
    patch = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    return [
        Shape("a", "polygon", ((0, 0), (30.5, 2), (12, 19.2))),
        Shape("b", "circle", ((20, 10), (26, 14))),
        Shape("__ignore__", "mask", ((0, 0), (2.5, 1.5)), mask=patch),
    ]


def test_rows_when_pillow_cannot_draw_in_place(monkeypatch):
    # A Pillow that cannot draw into the row buffer: the canvas is drawn and copied into rows.
    monkeypatch.setattr(draw, "_canvas_over", lambda *args: None)
    rows = draw_rows(_some_shapes(), 20, 32, VALUES)
    np.testing.assert_array_equal(
        rows_pixels(rows, 20, 32), draw_shapes(_some_shapes(), 20, 32, VALUES)
    )


def test_rows_when_pillow_copies_the_canvas_before_drawing(monkeypatch):
    # A Pillow that keeps the buffer read-only copies the canvas before drawing on it: the
    # rows must come from that copy, not from the untouched buffer.
    canvas_over = draw._canvas_over

    def read_only(*args):
        canvas = canvas_over(*args)
        canvas.readonly = 1
        return canvas

    monkeypatch.setattr(draw, "_canvas_over", read_only)
    rows = draw_rows(_some_shapes(), 20, 32, VALUES)
    np.testing.assert_array_equal(
        rows_pixels(rows, 20, 32), draw_shapes(_some_shapes(), 20, 32, VALUES)
    )


# --- files and folders ----------------------------------------------------------------------


def test_rasterize_dir_writes_the_dataset(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    write_labelme(
        ann,
        "one",
        [
            shape("cat", [[1, 1], [8, 1], [8, 6]]),
            shape("__ignore__", [[0, 0], [2, 2]], "rectangle"),
        ],
    )
    write_labelme(ann / "sub", "two", [shape("dog", [[3, 3], [5, 5]], "rectangle")], suffix=".jpg")
    out = tmp_path / "ds"
    report = rasterize_dir(ann, out, labels=labels_txt, jobs=1)
    assert report.n_images == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["one.png", "two.jpg"]
    assert (out / "images" / "two.jpg").read_bytes() == (ann / "sub" / "two.jpg").read_bytes()
    with Image.open(out / "masks" / "one.png") as img:
        assert img.mode == "P" and img.size == (16, 12)
        assert img.getpalette()[3:6] == [128, 0, 0]  # cat's VOC colour
    one = read_png(out / "masks" / "one.png")
    cmap = read_class_map(labels_txt)
    expected = labelme_reference(
        [
            Shape("cat", "polygon", ((1, 1), (8, 1), (8, 6))),
            Shape("__ignore__", "rectangle", ((0, 0), (2, 2))),
        ],
        12,
        16,
        cmap.value_of(),
    )
    np.testing.assert_array_equal(one, expected)
    assert set(np.unique(one)) == {0, 1, 255}
    assert read_class_map(out / "classes.json") == cmap
    doc = json.loads((out / "rasterize_report.json").read_text())
    assert doc["classes"]["dog"]["pixels"] == 9 and doc["classes"]["cat"]["shapes"] == 1
    assert doc["ignore"]["pixels"] == 9
    assert not list(tmp_path.glob(".ds*"))  # no temporary folder left behind


def test_report_pixels_are_the_masks_pixels(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    rng = np.random.default_rng(3)
    for i in range(5):
        shapes = [
            shape(
                str(rng.choice(["cat", "dog", "__ignore__"])), rng.uniform(-5, 60, (5, 2)).tolist()
            )
            for _ in range(6)
        ]
        write_labelme(ann, f"f{i}", shapes, size=(57, 43))
    report = rasterize_dir(ann, tmp_path / "ds", labels=labels_txt, jobs=1).to_json()
    masks = [read_png(p) for p in sorted((tmp_path / "ds/masks").iterdir())]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=256)
    for name, row in report["classes"].items():
        assert row["pixels"] == counts[row["id"]], name
    assert report["ignore"]["pixels"] == counts[255]
    assert sum(row["pixels"] for row in report["classes"].values()) + counts[255] == 5 * 57 * 43


def test_png_level_changes_the_file_not_the_pixels(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    write_labelme(ann, "x", [shape("cat", [[1, 1], [14, 2], [8, 10]])], size=(64, 48))
    sizes = {}
    for level in (0, 1, 9):
        rasterize_dir(ann, tmp_path / f"l{level}", labels=labels_txt, png_level=level)
        sizes[level] = (tmp_path / f"l{level}/masks/x.png").stat().st_size
        np.testing.assert_array_equal(
            read_png(tmp_path / f"l{level}/masks/x.png"), read_png(tmp_path / "l0/masks/x.png")
        )
    assert sizes[0] > 64 * 48 > sizes[1] and sizes[9] <= sizes[1]
    with pytest.raises(SegtoolError, match="--png-level 10 is not one of 0..9"):
        rasterize_dir(ann, tmp_path / "bad", labels=labels_txt, png_level=10)


def test_parallel_and_serial_runs_agree(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    for i in range(6):
        write_labelme(ann, f"f{i}", [shape("cat", [[i, 0], [15, 3 + i], [2, 11]])])
    rasterize_dir(ann, tmp_path / "a", labels=labels_txt, jobs=1)
    rasterize_dir(ann, tmp_path / "b", labels=labels_txt, jobs=2, images="none")
    assert not (tmp_path / "b" / "images").exists()
    for i in range(6):
        name = f"masks/f{i}.png"
        np.testing.assert_array_equal(
            read_png(tmp_path / "a" / name), read_png(tmp_path / "b" / name)
        )


def test_link_mode_hard_links(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    write_labelme(ann, "x", [shape("cat", [[0, 0], [3, 3]], "rectangle")])
    rasterize_dir(ann, tmp_path / "ds", labels=labels_txt, images="link", jobs=1)
    assert (tmp_path / "ds/images/x.png").stat().st_ino == (ann / "x.png").stat().st_ino


def test_derived_class_map(tmp_path):
    ann = tmp_path / "ann"
    write_labelme(
        ann,
        "x",
        [
            shape("zebra", [[0, 0], [3, 3]], "rectangle"),
            shape("ant", [[5, 5], [7, 7]], "rectangle"),
        ],
    )
    report = rasterize_dir(ann, tmp_path / "ds", jobs=1)
    assert report.class_map.names == ("_background_", "ant", "zebra")
    mask = read_png(tmp_path / "ds/masks/x.png")
    assert mask[1, 1] == 2 and mask[6, 6] == 1


def test_image_data_wins_and_json_named_as_image(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    # Old files name the JSON itself as imagePath; the embedded image is the image.
    write_labelme(
        ann,
        "old",
        [shape("cat", [[0, 0], [2, 2]], "rectangle")],
        size=(7, 5),
        image=False,
        imagePath="old.json",
        imageData=image_b64(7, 5, "JPEG"),
    )
    write_labelme(
        ann,
        "win",
        [shape("dog", [[0, 0], [2, 2]], "rectangle")],
        size=(9, 4),
        image=False,
        imagePath="..\\elsewhere\\win.png",
        imageData=image_b64(9, 4),
    )
    rasterize_dir(ann, tmp_path / "ds", labels=labels_txt, jobs=1)
    assert read_png(tmp_path / "ds/masks/old.png").shape == (5, 7)
    assert read_png(tmp_path / "ds/masks/win.png").shape == (4, 9)
    assert (tmp_path / "ds/images/old.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_windows_separators_in_image_path(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    write_image(ann / "pics" / "w.png", 6, 6)
    write_labelme(
        ann,
        "w",
        [shape("cat", [[0, 0], [2, 2]], "rectangle")],
        size=(6, 6),
        image=False,
        imagePath="pics\\w.png",
    )
    rasterize_dir(ann, tmp_path / "ds", labels=labels_txt, jobs=1)
    assert (tmp_path / "ds/images/w.png").read_bytes() == (ann / "pics/w.png").read_bytes()


def test_exif_rotation_gives_the_displayed_size(tmp_path, labels_txt):
    ann = tmp_path / "ann"
    write_image(ann / "r.jpg", 20, 10, exif_orientation=6)  # stored 20 x 10, shown 10 x 20
    write_labelme(
        ann,
        "r",
        [shape("cat", [[0, 0], [3, 3]], "rectangle")],
        size=(10, 20),
        image=False,
        imagePath="r.jpg",
    )
    rasterize_dir(ann, tmp_path / "ds", labels=labels_txt, jobs=1)
    assert read_png(tmp_path / "ds/masks/r.png").shape == (20, 10)


def test_more_than_255_classes_write_16_bit_masks(tmp_path):
    names = ["_background_", *(f"c{i:03d}" for i in range(300))]
    (tmp_path / "labels.txt").write_text("\n".join(names))
    ann = tmp_path / "ann"
    write_labelme(
        ann,
        "x",
        [
            shape("c299", [[0, 0], [3, 3]], "rectangle"),
            shape("__ignore__", [[5, 5], [6, 6]], "rectangle"),
        ],
    )
    rasterize_dir(ann, tmp_path / "ds", labels=tmp_path / "labels.txt", jobs=1)
    mask = read_png(tmp_path / "ds/masks/x.png")
    assert mask.dtype.itemsize >= 2
    assert mask[0, 0] == 300 and mask[5, 5] == 65535 and mask[10, 10] == 0


def test_rasterize_file_matches_dir(tmp_path, labels_txt):
    path = write_labelme(tmp_path / "ann", "x", [shape("dog", [[1, 1], [9, 2], [4, 9]])])
    mask = rasterize_file(path, read_class_map(labels_txt))
    rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels_txt, jobs=1)
    np.testing.assert_array_equal(mask, read_png(tmp_path / "ds/masks/x.png"))


def test_mask_shape_from_file(tmp_path, labels_txt):
    buf = io.BytesIO()
    Image.fromarray(np.array([[1, 0], [1, 1]], dtype=bool)).save(buf, format="PNG")
    patch = base64.b64encode(buf.getvalue()).decode()
    path = write_labelme(
        tmp_path / "ann", "m", [shape("cat", [[2.4, 1.0], [3.6, 2.2]], "mask", mask=patch)]
    )
    mask = rasterize_file(path, read_class_map(labels_txt))
    assert mask[1:3, 2:4].tolist() == [[1, 0], [1, 1]] and mask.sum() == 3


# --- parsing a whole file's shapes at once ---------------------------------------------------

json_number = st.integers(-50, 150) | st.floats(-50, 150).map(lambda v: round(v, 2))
odd_value = st.sampled_from(
    [True, None, "3", float("nan"), float("inf"), -float("inf"), 10**400, [1, 2], {}, 1e308]
)
json_point = st.lists(json_number, min_size=2, max_size=2)
odd_point = (
    st.lists(json_number | odd_value, min_size=2, max_size=2)
    | st.lists(json_number, min_size=0, max_size=3)
    | odd_value
)


def _points_for(kind: str | None) -> st.SearchStrategy:
    low, high = SHAPE_POINTS[kind or "polygon"]
    return st.lists(json_point, min_size=low, max_size=high or low + 5)


plain_shape = st.sampled_from([*SHAPE_POINTS.keys() - {"mask"}, None, ""]).flatmap(
    lambda kind: st.builds(
        lambda label, points, group: {
            "label": label,
            "shape_type": kind,
            "points": points,
            "group_id": group,
        },
        st.sampled_from(["a", "b", "__ignore__"]),
        _points_for(kind),
        st.none() | st.integers(0, 9),
    )
)


def _odd_shape(shape: dict, field: str, value) -> object:
    """`shape` with one field replaced (or the whole shape, for field "shape")."""
    return value if field == "shape" else {**shape, field: value}


odd_shape = st.builds(
    _odd_shape,
    plain_shape,
    st.sampled_from(["shape", "label", "shape_type", "points", "group_id"]),
    odd_value | st.just("") | st.just("mask") | st.lists(odd_point, min_size=1, max_size=4),
)


def _parsed_one_by_one(raws: list):
    """The shapes as `_parse_shape` checks them one at a time, or the error it raises."""
    try:
        return tuple(labelme._parse_shape(raw, i) for i, raw in enumerate(raws))
    except AnnotationError as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(raws=st.lists(plain_shape | odd_shape, max_size=6))
def test_a_whole_file_checked_at_once_accepts_exactly_what_each_shape_check_accepts(raws):
    one_by_one = _parsed_one_by_one(raws)
    at_once = labelme._plain_shapes(raws)
    if isinstance(one_by_one, AnnotationError):
        assert at_once is None  # then the shape-by-shape check names the problem
    elif at_once is not None:
        assert at_once == one_by_one
        assert [type(c) for s in at_once for xy in s.points for c in xy] == [
            type(c) for s in one_by_one for xy in s.points for c in xy
        ]


@settings(max_examples=100, deadline=None)
@given(raws=st.lists(plain_shape, max_size=8))
def test_plain_files_take_the_whole_file_check(raws):
    shapes = labelme._plain_shapes(raws)
    assert shapes is not None and shapes == _parsed_one_by_one(raws)


# --- bad inputs: message, and nothing written ----------------------------------------------


def _fails(tmp_path, labels, message, **kwargs):
    out = tmp_path / "ds"
    with pytest.raises(SegtoolError, match=message):
        rasterize_dir(tmp_path / "ann", out, labels=labels, jobs=1, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]


def _bad_file(tmp_path, text: str):
    (tmp_path / "ann").mkdir(exist_ok=True)
    (tmp_path / "ann" / "bad.json").write_text(text)


def test_malformed_json(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "good", [])
    _bad_file(tmp_path, '{"shapes": [')
    _fails(tmp_path, labels_txt, r"1 of 2 annotation files are invalid.*bad.json: not valid JSON")


def test_not_a_labelme_file(tmp_path, labels_txt):
    _bad_file(tmp_path, '{"images": []}')
    _fails(tmp_path, labels_txt, r"bad.json: not a labelme file \(no \"shapes\" list\)")


@pytest.mark.parametrize(
    ("bad_shape", "message"),
    [
        (shape("cat", [[0, 0], [1, 1]]), "a polygon needs at least 3 points, got 2"),
        (shape("cat", [[0, 0], [1, 1], [2, 2]], "rectangle"), "a rectangle needs 2 points"),
        (shape("cat", [[0, 0], ["x", 1], [2, 2]]), r"point \['x', 1\] is not a pair of numbers"),
        (shape("cat", [[0, 0], [1, 1], [2, 2, 3]]), "is not a pair of numbers"),
        (shape("cat", [[0, 0], [1e400, 1], [2, 2]]), "not finite"),
        # JSON integers too large for a float: PIL cannot take them (they stopped the run).
        (shape("cat", [[0, 0], [10**400, 1], [2, 2]]), "not finite"),
        (shape("cat", [[0, 0], [10**400, 1], [2, 2], []]), "not finite"),
        (shape("cat", [[0, 0], [10**400, 1], [2, 2], [1, 2, 3]]), "not finite"),
        (shape("cat", [[10**400, -(10**400)], [1, 1], [2, 2]]), "not finite"),
        (shape("cat", [[0, 0], [10**400, 1]], "circle"), "not finite"),
        (shape("cat", [[0, 0], [1, 1], [2, 2]], "hexagon"), "unknown shape_type 'hexagon'"),
        (shape("cat", [[0, 0], [1, 1], [2, 2]], ["polygon"]), r"unknown shape_type \['polygon'\]"),
        (shape("bird", [[0, 0], [1, 1], [2, 2]]), "label 'bird' is not in the class map"),
        (shape("", [[0, 0], [1, 1], [2, 2]]), "label '' is not a non-empty string"),
        (shape("cat", [[0, 0], [1, 1]], "mask", mask="@@notbase64@@"), "not a base64 PNG"),
    ],
)
def test_bad_shapes(tmp_path, labels_txt, bad_shape, message):
    write_labelme(tmp_path / "ann", "bad", [shape("cat", [[0, 0], [3, 3]], "rectangle"), bad_shape])
    _fails(tmp_path, labels_txt, message)


def test_nan_coordinates(tmp_path, labels_txt):
    (tmp_path / "ann").mkdir()
    write_image(tmp_path / "ann" / "n.png", 8, 8)
    (tmp_path / "ann" / "n.json").write_text(
        '{"shapes": [{"label": "cat", "points": [[0, 0], [NaN, 1], [2, 2]]}], "imagePath": "n.png"}'
    )
    _fails(tmp_path, labels_txt, r"n.json: shape 0 \('cat'\): point \[0, nan\]|not finite")


def test_no_image_and_no_image_data(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [], image=False)
    _fails(tmp_path, labels_txt, r"x.json: image .*x.png not found and the JSON has no imageData")


def test_truncated_image(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [], size=(64, 64), suffix=".jpg")
    data = (tmp_path / "ann" / "x.jpg").read_bytes()
    (tmp_path / "ann" / "x.jpg").write_bytes(data[: len(data) // 2])
    _fails(tmp_path, labels_txt, r"x.jpg: the image is damaged or truncated")


def test_truncated_png_and_garbage_image(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [], size=(64, 64))
    data = (tmp_path / "ann" / "x.png").read_bytes()
    (tmp_path / "ann" / "x.png").write_bytes(data[:-20])
    write_labelme(tmp_path / "ann", "y", [])
    (tmp_path / "ann" / "y.png").write_bytes(b"not an image at all")
    _fails(tmp_path, labels_txt, r"2 of 2 .*truncated.*y.png: not a readable image")


def test_size_mismatch(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [], size=(16, 12), imageHeight=99)
    _fails(
        tmp_path, labels_txt, r"imageHeight x imageWidth 99 x 16 disagrees with the image, 12 x 16"
    )


def test_empty_folder(tmp_path, labels_txt):
    (tmp_path / "ann").mkdir()
    _fails(tmp_path, labels_txt, "no \\*.json annotation files found")


def test_duplicate_stems(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann" / "a", "same", [])
    write_labelme(tmp_path / "ann" / "b", "same", [])
    _fails(tmp_path, labels_txt, "same stem as .*masks are named by file stem, so keep one")


def test_malformed_labels_file(tmp_path):
    write_labelme(tmp_path / "ann", "x", [])
    (tmp_path / "labels.txt").write_text("__ignore__\ncat\n")
    _fails(tmp_path, tmp_path / "labels.txt", "after __ignore__ labelme expects _background_")


def test_out_exists(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [shape("cat", [[0, 0], [3, 3]], "rectangle")])
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(SegtoolError, match="already exists; pass --overwrite"):
        rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels_txt, jobs=1)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"
    rasterize_dir(tmp_path / "ann", tmp_path / "ds", labels=labels_txt, jobs=1, overwrite=True)
    assert not (tmp_path / "ds" / "keep.txt").exists()
    assert (tmp_path / "ds" / "masks" / "x.png").exists()


def test_skip_invalid_converts_the_rest(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "good", [shape("cat", [[0, 0], [3, 3]], "rectangle")])
    write_labelme(tmp_path / "ann", "bad", [shape("bird", [[0, 0], [3, 3]], "rectangle")])
    report = rasterize_dir(
        tmp_path / "ann", tmp_path / "ds", labels=labels_txt, jobs=1, skip_invalid=True
    )
    assert report.n_images == 1
    assert [p.name for p in (tmp_path / "ds/masks").iterdir()] == ["good.png"]
    doc = json.loads((tmp_path / "ds/rasterize_report.json").read_text())
    assert "bird" in doc["skipped"][0]["reason"] and doc["skipped"][0]["file"].endswith("bad.json")


def test_all_problems_are_listed_together(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "a", [shape("bird", [[0, 0], [3, 3]], "rectangle")])
    write_labelme(tmp_path / "ann", "b", [shape("cat", [[0, 0]])])
    _fails(tmp_path, labels_txt, r"2 of 2 .*a.json: label 'bird'.*b.json: .*polygon needs")


def test_output_inside_the_annotation_folder_is_refused(tmp_path, labels_txt):
    write_labelme(tmp_path / "ann", "x", [shape("cat", [[0, 0], [3, 3]], "rectangle")])
    with pytest.raises(SegtoolError, match="ds lies inside the annotations folder .*ann"):
        rasterize_dir(tmp_path / "ann", tmp_path / "ann" / "ds", labels=labels_txt, jobs=1)
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["x.json", "x.png"]


def test_unused_class_map_entries_still_written(tmp_path):
    cmap = make_class_map(["_background_", "x", "y"])
    cmap.save(tmp_path / "classes.json")
    write_labelme(tmp_path / "ann", "f", [shape("x", [[0, 0], [1, 1]], "rectangle")])
    report = rasterize_dir(
        tmp_path / "ann", tmp_path / "ds", labels=tmp_path / "classes.json", jobs=1
    )
    assert report.to_json()["classes"]["y"]["pixels"] == 0


def test_an_image_name_the_system_refuses_is_not_found(tmp_path, labels_txt):
    """An imagePath over 255 bytes: one invalid file (--skip-invalid skips it), not a crash."""
    write_labelme(tmp_path / "ann", "x", [shape("cat", [[0, 0], [3, 3]], "rectangle")])
    doc = json.loads((tmp_path / "ann" / "x.json").read_text())
    doc["imagePath"] = "b" * 300 + ".png"
    doc["imageData"] = None
    (tmp_path / "ann" / "x.json").write_text(json.dumps(doc))
    _fails(tmp_path, labels_txt, r"x.json: image .*bbb.png not found and the JSON has no imageData")
