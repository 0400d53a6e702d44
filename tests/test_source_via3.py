"""VIA 3 projects: the same regions written as VIA 2 give the same pixels; hand-computed shapes;
classes from dropdown, radio, checkbox and text attributes; views and files; refusals."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_shapes
from segtool.sources.detect import detect
from segtool.sources.shapes import Shape
from segtool.sources.via import read_via
from tests.cli import invoke
from tests.conftest import read_png, write_image
from tests.source_reference import composite

VALUES = {"_background_": 0, "car": 1, "road": 2}
#: A dropdown attribute: option ids -> class names.
SELECT = {
    "aname": "class",
    "anchor_id": "FILE1_Z0_XY1",
    "type": 4,
    "desc": "",
    "options": {"0": "car", "1": "road"},
    "default_option_id": "",
}
OPTION = {"car": "0", "road": "1"}


def project(
    regions: dict[str, list[tuple[list, dict]]],
    attributes: dict | None = None,
    **change,
) -> dict:
    """A VIA 3 project: one view per image name, each with its (xy, av) regions in order."""
    files, views, metadata = {}, {}, {}
    for k, (name, items) in enumerate(regions.items(), start=1):
        files[str(k)] = {"fid": k, "fname": name, "type": 2, "loc": 1, "src": ""}
        views[str(k)] = {"fid_list": [k]}
        for j, (xy, av) in enumerate(items):
            metadata[f"{k}_m{j}"] = {"vid": str(k), "flg": 0, "z": [], "xy": xy, "av": av}
    doc = {
        "project": {
            "pid": "__VIA_PROJECT_ID__",
            "data_format_version": "3.1.1",
            "vid_list": list(views),
        },
        "config": {"file": {"loc_prefix": {"1": "", "2": "", "3": "", "4": ""}}, "ui": {}},
        "attribute": {"1": SELECT} if attributes is None else attributes,
        "file": files,
        "view": views,
        "metadata": metadata,
    }
    return doc | change


def write(tmp: Path, doc, name: str = "via_project.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(doc))
    return path


def one_record(tmp: Path, doc, **kwargs):
    (record,) = read_via(write(tmp, doc), **kwargs)
    return record


# The same region in both versions: (VIA 3 xy, VIA 2 shape_attributes).
def both(kind: str, v: list) -> tuple[list, dict]:
    if kind == "rect":
        return [2, *v], {"name": "rect", "x": v[0], "y": v[1], "width": v[2], "height": v[3]}
    if kind == "circle":
        return [3, *v], {"name": "circle", "cx": v[0], "cy": v[1], "r": v[2]}
    if kind == "ellipse":
        return [4, *v], {"name": "ellipse", "cx": v[0], "cy": v[1], "rx": v[2], "ry": v[3]}
    if kind == "point":
        return [1, *v], {"name": "point", "cx": v[0], "cy": v[1]}
    if kind == "extreme_rect":  # four extreme points: left, top, right, bottom
        x, y, w, h = v
        xy = [8, x, y + h / 2, x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h]
        return xy, {"name": "rect", "x": x, "y": y, "width": w, "height": h}
    if kind == "extreme_circle":  # three points on the circle
        cx, cy, r = v
        return [9, cx + r, cy, cx, cy + r, cx - r, cy], {
            "name": "circle",
            "cx": cx,
            "cy": cy,
            "r": r,
        }
    xs, ys = v[0::2], v[1::2]
    shape_id = {"polygon": 7, "polyline": 6, "line": 5}[kind]
    name = "polygon" if kind == "polygon" else "polyline"
    return [shape_id, *v], {"name": name, "all_points_x": xs, "all_points_y": ys}


num = st.integers(-3, 30)
size = st.integers(0, 9)
PARAMS = {
    "rect": st.tuples(num, num, size, size),
    "circle": st.tuples(num, num, size),
    "ellipse": st.tuples(num, num, size, size),
    "point": st.tuples(num, num),
    "extreme_rect": st.tuples(num, num, size.map(lambda s: 2 * s), size.map(lambda s: 2 * s)),
    "extreme_circle": st.tuples(num, num, st.integers(1, 8)),
    "polygon": st.lists(num, min_size=6, max_size=12).filter(lambda v: len(v) % 2 == 0),
    "polyline": st.lists(num, min_size=4, max_size=12).filter(lambda v: len(v) % 2 == 0),
    "line": st.tuples(num, num, num, num),
}
region = st.sampled_from(sorted(PARAMS)).flatmap(
    lambda k: st.tuples(st.just(k), PARAMS[k].map(list), st.sampled_from(["car", "road"]))
)


def via2_of(regions: list[tuple[str, list, str]]) -> dict:
    """The same regions as a VIA 2 project with a dropdown attribute."""
    items = [
        {"shape_attributes": both(kind, v)[1], "region_attributes": {"class": label}}
        for kind, v, label in regions
    ]
    entry = {"filename": "a.jpg", "size": 1, "regions": items, "file_attributes": {}}
    return {
        "_via_settings": {},
        "_via_img_metadata": {"a.jpg1": entry},
        "_via_attributes": {"region": {"class": {"type": "dropdown"}}, "file": {}},
    }


def via3_of(regions: list[tuple[str, list, str]]) -> dict:
    return project({"a.jpg": [(both(kind, v)[0], {"1": OPTION[lab]}) for kind, v, lab in regions]})


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(regions=st.lists(region, max_size=6))
def test_via3_regions_give_the_pixels_of_the_same_via2_regions(tmp_path, regions):
    three = one_record(tmp_path, via3_of(regions))
    two = one_record(tmp_path, via2_of(regions))
    assert three.problem is None and two.problem is None
    mask3 = draw_shapes(three.shapes, 24, 26, VALUES)
    np.testing.assert_array_equal(mask3, draw_shapes(two.shapes, 24, 26, VALUES))
    # and both are what the slow one-canvas-per-region reference draws
    spec = []
    for kind, v, label in regions:
        xy = both(kind, v)[1]
        if kind in ("rect", "extreme_rect"):
            x, y, w, h = xy["x"], xy["y"], xy["width"], xy["height"]
            spec.append(("box", (x, y, x + w, y + h, 0, (0, 0)), VALUES[label]))
        elif kind in ("circle", "extreme_circle"):
            spec.append(("circle", (xy["cx"], xy["cy"], xy["r"]), VALUES[label]))
        elif kind == "ellipse":
            spec.append(("ellipse", tuple(v), VALUES[label]))
        elif kind == "point":
            spec.append(("point", tuple(v), VALUES[label]))
        else:
            pts = list(zip(v[0::2], v[1::2], strict=True))
            spec.append(("polygon" if kind == "polygon" else "polyline", pts, VALUES[label]))
    np.testing.assert_array_equal(mask3, composite(spec, 24, 26))


HAND_SHAPES = [
    ([1, 4, 5], Shape("car", "point", ((4, 5),))),
    ([2, 1, 2, 3, 4], Shape("car", "rectangle", ((1, 2), (4, 6)))),
    ([3, 5, 6, 2], Shape("car", "circle", ((5, 6), (7, 6)))),
    ([4, 5, 6, 3, 2], Shape("car", "ellipse", ((2, 4), (8, 8)))),
    ([5, 0, 1, 7, 8], Shape("car", "linestrip", ((0, 1), (7, 8)))),
    ([6, 0, 1, 7, 8, 3, 2], Shape("car", "linestrip", ((0, 1), (7, 8), (3, 2)))),
    ([7, 0, 0, 4, 0, 4, 3], Shape("car", "polygon", ((0, 0), (4, 0), (4, 3)))),
    # extreme points left (1, 4), top (3, 2), right (6, 5), bottom (2, 7) -> box (1, 2)-(6, 7)
    ([8, 1, 4, 3, 2, 6, 5, 2, 7], Shape("car", "rectangle", ((1, 2), (6, 7)))),
    # VIA takes the four extreme points in any order: bottom, right, left, top here
    ([8, 2, 7, 6, 5, 1, 4, 3, 2], Shape("car", "rectangle", ((1, 2), (6, 7)))),
    # (0, 5), (10, 5), (5, 0) lie on the circle about (5, 5) of radius 5
    ([9, 0, 5, 10, 5, 5, 0], Shape("car", "circle", ((5, 5), (10, 5)))),
]


@pytest.mark.parametrize(("xy", "expected"), HAND_SHAPES, ids=lambda v: str(v)[:12])
def test_each_shape_id_becomes_the_hand_computed_shape(tmp_path, xy, expected):
    record = one_record(tmp_path, project({"a.jpg": [(xy, {"1": "0"})]}))
    assert record.problem is None
    assert record.shapes == (expected,)


def test_hand_computed_pixels(tmp_path):
    # a 3x2 rectangle at (1, 2), a triangle and an extreme box, later over earlier
    regions = [
        ([2, 1, 2, 3, 2], {"1": "0"}),
        ([7, 5, 0, 7, 0, 7, 2], {"1": "1"}),
        ([8, 0, 6, 1, 5, 2, 6, 1, 7], {"1": "1"}),
    ]
    record = one_record(tmp_path, project({"a.jpg": regions}))
    expected = np.zeros((8, 8), np.uint8)
    expected[2:5, 1:5] = 1  # x 1..4, y 2..4, outline included
    for y, xs in ((0, range(5, 8)), (1, range(6, 8)), (2, range(7, 8))):
        expected[y, list(xs)] = 2  # the triangle (5,0)-(7,0)-(7,2) with its outline
    expected[5:8, 0:3] = 2  # the box around (0,6), (1,5), (2,6), (1,7)
    np.testing.assert_array_equal(draw_shapes(record.shapes, 8, 8, VALUES), expected)


ATTRIBUTE_CASES = {
    "dropdown": ({"type": 4, "options": {"0": "car", "1": "road"}}, "1", "road"),
    "radio": ({"type": 3, "options": {"a": "road", "b": "car"}}, "b", "car"),
    "checkbox one ticked": ({"type": 2, "options": {"0": "car", "1": "road"}}, "1", "road"),
    "text": ({"type": 1, "options": {}}, " road ", "road"),
    "text background": ({"type": 1, "options": {}}, "Background", "_background_"),
}


@pytest.mark.parametrize("case", sorted(ATTRIBUTE_CASES))
def test_class_from_the_attribute(tmp_path, case):
    definition, value, expected = ATTRIBUTE_CASES[case]
    attrs = {"7": {"aname": "kind", "anchor_id": "FILE1_Z0_XY1", **definition}}
    record = one_record(tmp_path, project({"a.jpg": [([1, 1, 1], {"7": value})]}, attrs))
    assert record.problem is None
    assert [s.label for s in record.shapes] == [expected]


BAD_VALUES = {
    "unset": (
        {"type": 4, "options": {"0": "car"}},
        None,
        "it has no class (attribute 'kind' is not set); set it in VIA",
    ),
    "no such option": (
        {"type": 4, "options": {"0": "car"}},
        "5",
        "option id '5', which is none of its options (0='car'); pick one in VIA",
    ),
    "two ticked": (
        {"type": 2, "options": {"0": "car", "1": "road"}},
        "0,1",
        "has 2 options ticked ('0,1'); tick exactly one",
    ),
    "empty text": ({"type": 1, "options": {}}, "  ", "it has no class (attribute 'kind' is empty)"),
    "number in a text": (
        {"type": 1, "options": {}},
        5,
        "attribute 'kind' holds the number 5, not a text; type the class in VIA",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_class_values_name_the_region(tmp_path, case):
    definition, value, expected = BAD_VALUES[case]
    attrs = {"7": {"aname": "kind", "anchor_id": "FILE1_Z0_XY1", **definition}}
    av = {} if value is None else {"7": value}
    regions = [([1, 1, 1], {"7": "0"}), ([1, 1, 1], av)]
    record = one_record(tmp_path, project({"a.jpg": regions}, attrs))
    assert record.problem.startswith("image 'a.jpg', region '1_m1': ")
    assert expected in record.problem


def test_choosing_the_class_attribute(tmp_path):
    colour = {"aname": "colour", "anchor_id": "FILE1_Z0_XY1", "type": 1, "options": {}}
    caption = {"aname": "caption", "anchor_id": "FILE1_Z0_XY0", "type": 1, "options": {}}
    regions = [([1, 1, 1], {"1": "1", "2": "red"})]
    # a file attribute (a caption) is no candidate: one region attribute is chosen alone
    assert (
        one_record(tmp_path, project({"a.jpg": regions}, {"1": SELECT, "3": caption}))
        .shapes[0]
        .label
        == "road"
    )
    path = write(tmp_path, project({"a.jpg": regions}, {"1": SELECT, "2": colour, "3": caption}))
    with pytest.raises(
        SegtoolError, match=r"several region attributes .*\('class', 'colour'\).*--via-attribute"
    ):
        read_via(path)
    assert read_via(path, attribute="colour")[0].shapes[0].label == "red"
    assert read_via(path, attribute="class")[0].shapes[0].label == "road"
    with pytest.raises(
        SegtoolError, match=r"no region attribute 'caption'; the file has 'class', 'colour'"
    ):
        read_via(path, attribute="caption")
    twins = write(tmp_path, project({"a.jpg": regions}, {"1": SELECT, "2": SELECT}))
    with pytest.raises(SegtoolError, match=r"2 region attributes are named 'class' \(ids 1, 2\)"):
        read_via(twins, attribute="class")
    bare = write(tmp_path, project({"a.jpg": regions}, {"3": caption}))
    with pytest.raises(SegtoolError, match="no region attribute holds a class; add a region"):
        read_via(bare)


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_views_files_and_their_order(tmp_path):
    doc = project(
        {
            "a.jpg": [([2, 0, 0, 1, 1], {"1": "0"}), ([], {"2": "a caption"})],
            "b.jpg": [([1, 3, 3], {"1": "1"})],
            "c.jpg": [],
        }
    )
    doc["project"]["vid_list"] = ["3", "1", "2"]  # VIA's order, not the object's
    doc["file"]["2"] |= {"loc": 2, "fname": "b", "src": "https://example.org/pics/b.jpg?x=1"}
    doc["file"]["3"] |= {"loc": 3, "fname": "c", "src": "file:///home/me/pics/c.jpg"}
    data = png_bytes(5, 4)
    doc["file"]["4"] = {
        "fid": 4,
        "fname": "d.png",
        "type": 2,
        "loc": 4,
        "src": "data:image/png;base64," + base64.b64encode(data).decode(),
    }
    doc["view"]["4"] = {"fid_list": [4]}
    records = read_via(write(tmp_path, doc), tmp_path / "pics")
    assert [r.name for r in records] == ["c.jpg", "a.jpg", "b.jpg", "d.png"]
    assert [r.problem for r in records] == [None] * 4
    c, a, b, d = records
    assert [s.shape_type for s in a.shapes] == ["rectangle"]  # the caption entry has no pixels
    assert b.shapes == (Shape("road", "point", ((3, 3),)),)
    assert c.shapes == () and c.image == tmp_path / "pics" / "c.jpg"
    assert b.image == tmp_path / "pics" / "b.jpg"
    assert d.data == data


def test_projects_saved_by_via_3_1_0_keep_vid_list_at_the_top(tmp_path):
    doc = project({"a.jpg": [], "b.jpg": [([1, 1, 1], {"1": "0"})]})
    doc["vid_list"] = ["2", "1"]
    del doc["project"]["vid_list"]
    assert [r.name for r in read_via(write(tmp_path, doc))] == ["b.jpg", "a.jpg"]


def test_is_detected_as_via(tmp_path):
    path = write(tmp_path, project({"a.jpg": []}))
    assert detect(path) == ("via", path)
    assert detect(tmp_path) == ("via", path)


def refused(change) -> dict:
    doc = project({"a.jpg": [([1, 1, 1], {"1": "0"})]})
    change(doc)
    return doc


REFUSED = {
    "video": (
        lambda d: d["file"]["1"].update(fname="clip.mp4", type=4),
        "file 'clip.mp4' (file id 1) is a video; segtool reads VIA 3 image projects",
    ),
    "audio": (
        lambda d: d["file"]["1"].update(fname="talk.mp3", type=8),
        "file 'talk.mp3' (file id 1) is an audio file; segtool reads VIA 3 image projects",
    ),
    "temporal segment": (
        lambda d: d["metadata"]["1_m0"].update(z=[2, 6.5], xy=[]),
        "metadata '1_m0' has the time span z = [2, 6.5] (a temporal segment or a video frame); "
        "segtool reads VIA 3 image projects",
    ),
    "file entry not an object": (
        lambda d: d["file"].update({"1": "a.jpg"}),
        "file id 1 is 'a.jpg', not an object with fname and type; add the file again in VIA",
    ),
    "missing view": (
        lambda d: d["metadata"]["1_m0"].update(vid="9"),
        "metadata '1_m0' belongs to view '9', which the project does not have; set its vid to "
        "one of the views ('1') or delete the entry",
    ),
    "missing file": (
        lambda d: d["view"]["1"].update(fid_list=[5]),
        "view '1' shows file id 5, which the project's file list does not have",
    ),
    "pair of files": (
        lambda d: d["view"]["1"].update(fid_list=[1, 1]),
        "view '1' shows 2 files; segtool reads views of one image each",
    ),
    "two views of one image": (
        lambda d: d["view"].update({"2": {"fid_list": [1]}}),
        "views '1' and '2' both show image 'a.jpg'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_projects_say_why_in_one_line(tmp_path, case):
    change, expected = REFUSED[case]
    with pytest.raises(SegtoolError) as info:
        read_via(write(tmp_path, refused(change)))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'via_project.json'}: ")
    assert expected in message and "\n" not in message


BAD_XY = {
    "unknown shape id": ([10, 1, 1], "unknown shape id 10; segtool draws VIA 3's shapes (1 POINT"),
    "rectangle short": (
        [2, 1, 1, 3],
        "shape RECTANGLE is xy = [2, x, y, width, height], but 3 numbers follow the id; "
        "redraw the region in VIA",
    ),
    "polygon of two points": (
        [7, 0, 0, 5, 5],
        "shape POLYGON is xy = [7, x1, y1, x2, y2, ...] with at least 3 points, but 4 numbers",
    ),
    "odd polyline": ([6, 0, 0, 5, 5, 1], "shape POLYLINE is xy"),
    "not a number": ([3, 1, "2", 3], "holds something that is not a number"),
    "nan": ([1, float("nan"), 1], "holds something that is not a number"),
    "not a list": ("2,1,1,3,3", "is not a list starting with a shape id"),
    "collinear extreme circle": ([9, 0, 0, 1, 1, 2, 2], "its three points lie on one line"),
}


@pytest.mark.parametrize("case", sorted(BAD_XY))
def test_malformed_regions_name_the_image_and_region(tmp_path, case):
    xy, expected = BAD_XY[case]
    record = one_record(tmp_path, project({"a.jpg": [([1, 2, 2], {"1": "0"}), (xy, {"1": "0"})]}))
    assert record.problem.startswith("image 'a.jpg', region '1_m1': ")
    assert expected in record.problem


def rasterize(*args):
    return invoke(["rasterize", *map(str, args), "--jobs", "1"])


def test_cli_writes_the_masks_a_via2_export_gives(tmp_path):
    regions = [
        ("polygon", [0, 0, 9, 0, 9, 7], "road"),
        ("rect", [2, 2, 4, 3], "car"),
        ("ellipse", [8, 6, 3, 2], "car"),
        ("extreme_circle", [3, 7, 2], "road"),
    ]
    write_image(tmp_path / "a.jpg", 12, 10)
    for name, doc in (("via3", via3_of(regions)), ("via2", via2_of(regions))):
        result = rasterize(write(tmp_path, doc, f"{name}.json"), tmp_path / name)
        assert result.exit_code == 0, result.output
        assert "0=_background_, 1=car, 2=road" in result.stderr
    for part in ("masks/a.png", "classes.json"):
        assert (tmp_path / "via3" / part).read_bytes() == (tmp_path / "via2" / part).read_bytes()
    assert read_png(tmp_path / "via3" / "masks" / "a.png")[3, 3] == 1
    multi = rasterize(tmp_path / "via3.json", tmp_path / "multi", "--multilabel")
    assert multi.exit_code == 0, multi.output
    assert (tmp_path / "multi" / "masks" / "a.png").is_file()


def test_cli_refuses_a_video_project_in_one_line(tmp_path):
    doc = project({"clip.mp4": []})
    doc["file"]["1"]["type"] = 4
    result = rasterize(write(tmp_path, doc), tmp_path / "ds")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "via_project.json" in line and "is a video; segtool reads VIA 3 image projects" in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_cli_names_a_bad_region_and_writes_nothing(tmp_path):
    write_image(tmp_path / "a.jpg", 12, 10)
    doc = project({"a.jpg": [([4, 5, 5, 2], {"1": "0"})]})
    result = rasterize(write(tmp_path, doc), tmp_path / "ds")
    assert result.exit_code == 1
    assert (
        "image 'a.jpg', region '1_m0': shape ELLIPSE is xy = [4, cx, cy, rx, ry]" in result.stderr
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()
