"""VIA 1.x and 2.x JSON: regions drawn as the slow reference draws them; bad files refused."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_shapes
from segtool.sources.via import read_via
from tests.source_reference import composite

VALUES = {"_background_": 0, "balloon": 1, "string": 2}


def write(tmp: Path, doc) -> Path:
    path = tmp / "via_region_data.json"
    path.write_text(json.dumps(doc))
    return path


def via_doc(regions: list[dict], *, style: str, filename: str = "a.jpg", **entry) -> dict:
    """One image entry in VIA 1.x style (regions keyed "0", "1"...) or 2.x (a list), or a
    2.x saved project."""
    body = {"filename": filename, "size": 1234, "file_attributes": {}, **entry}
    if style == "1":
        body |= {
            "fileref": "",
            "base64_img_data": entry.get("base64_img_data", ""),
            "regions": {str(i): r for i, r in enumerate(regions)},
        }
    else:
        body["regions"] = regions
    doc = {f"{filename}1234": body}
    if style == "2-project":
        return {
            "_via_settings": {},
            "_via_img_metadata": doc,
            "_via_attributes": {"region": {"class": {"type": "text"}}, "file": {}},
        }
    return doc


def reference(doc: dict, h: int, w: int) -> np.ndarray:
    """Walk the JSON directly and draw region by region."""
    meta = doc.get("_via_img_metadata", doc)
    (entry,) = meta.values()
    regions = entry["regions"]
    if isinstance(regions, dict):
        regions = [regions[k] for k in sorted(regions, key=int)]
    spec = []
    for r in regions:
        a, value = r["shape_attributes"], VALUES[r["region_attributes"]["class"]]
        if a["name"] in ("polygon", "polyline"):
            pts = list(zip(a["all_points_x"], a["all_points_y"], strict=True))
            spec.append(("polygon" if a["name"] == "polygon" else "polyline", pts, value))
        elif a["name"] == "rect":
            spec.append(
                (
                    "box",
                    (a["x"], a["y"], a["x"] + a["width"], a["y"] + a["height"], 0, (0, 0)),
                    value,
                )
            )
        elif a["name"] == "circle":
            spec.append(("circle", (a["cx"], a["cy"], a["r"]), value))
        elif a["name"] == "ellipse":
            spec.append(("ellipse", (a["cx"], a["cy"], a["rx"], a["ry"]), value))
        elif a["name"] == "point":
            spec.append(("point", (a["cx"], a["cy"]), value))
    return composite(spec, h, w)


num = st.integers(-3, 30)


@st.composite
def region(draw_):
    name = draw_(st.sampled_from(["polygon", "polyline", "rect", "circle", "ellipse", "point"]))
    if name in ("polygon", "polyline"):
        n = draw_(st.integers(3 if name == "polygon" else 2, 6))
        attrs = {
            "all_points_x": [draw_(num) for _ in range(n)],
            "all_points_y": [draw_(num) for _ in range(n)],
        }
    elif name == "rect":
        attrs = {
            "x": draw_(num),
            "y": draw_(num),
            "width": draw_(st.integers(0, 9)),
            "height": draw_(st.integers(0, 9)),
        }
    elif name == "circle":
        attrs = {"cx": draw_(num), "cy": draw_(num), "r": draw_(st.integers(0, 8))}
    elif name == "ellipse":
        attrs = {
            "cx": draw_(num),
            "cy": draw_(num),
            "rx": draw_(st.integers(0, 8)),
            "ry": draw_(st.integers(0, 8)),
        }
    else:
        attrs = {"cx": draw_(num), "cy": draw_(num)}
    return {
        "shape_attributes": {"name": name, **attrs},
        "region_attributes": {"class": draw_(st.sampled_from(["balloon", "string"]))},
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(regions=st.lists(region(), max_size=6), style=st.sampled_from(["1", "2", "2-project"]))
def test_regions_match_the_reference(tmp_path, regions, style):
    doc = via_doc(regions, style=style)
    (record,) = read_via(write(tmp_path, doc))
    assert record.problem is None
    np.testing.assert_array_equal(
        draw_shapes(record.shapes, 24, 26, VALUES), reference(doc, 24, 26)
    )


def test_via1_regions_in_key_order_and_embedded_image(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (5, 4)).save(buf, format="PNG")
    data = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    square = {"name": "rect", "x": 0, "y": 0, "width": 3, "height": 3}
    doc = {
        "a.png9": {
            "filename": "a.png",
            "size": 9,
            "fileref": "",
            "base64_img_data": data,
            "file_attributes": {},
            "regions": {
                "10": {"shape_attributes": square, "region_attributes": {"class": "string"}},
                "2": {"shape_attributes": square, "region_attributes": {"class": "balloon"}},
            },
        }
    }
    (record,) = read_via(write(tmp_path, doc))
    assert [s.label for s in record.shapes] == ["balloon", "string"]  # "2" before "10"
    assert record.data == buf.getvalue()


def test_checkbox_attribute_and_chosen_attribute(tmp_path):
    region_ = {
        "shape_attributes": {"name": "point", "cx": 1, "cy": 1},
        "region_attributes": {"kind": {"balloon": True, "string": False}, "note": "x"},
    }
    path = write(tmp_path, via_doc([region_], style="2"))
    (record,) = read_via(path, attribute="kind")
    assert record.shapes[0].label == "balloon"
    with pytest.raises(
        SegtoolError, match=r"several region attributes .*'kind', 'note'.*--via-attribute"
    ):
        read_via(path)
    with pytest.raises(SegtoolError, match="no region attribute 'nope'"):
        read_via(path, attribute="nope")


def test_region_without_shape_attributes_is_named(tmp_path):
    regions = [{"region_attributes": {"class": "balloon"}}]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="1")))
    assert record.problem == "image 'a.jpg', region 0: it has no shape_attributes; redraw it in VIA"


def test_region_without_class_is_named(tmp_path):
    regions = [
        {
            "shape_attributes": {"name": "point", "cx": 1, "cy": 1},
            "region_attributes": {"class": ""},
        },
        {
            "shape_attributes": {"name": "point", "cx": 1, "cy": 1},
            "region_attributes": {"class": "balloon"},
        },
    ]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="2")))
    assert "region 0: it has no class" in record.problem


def test_not_via(tmp_path):
    # project and file alone are not a VIA 3 project (view and metadata are missing)
    with pytest.raises(SegtoolError, match=r"not a VIA file \(VIA 1.x/2.x: .*; VIA 3: a project"):
        read_via(write(tmp_path, {"project": {}, "file": {}}))


@pytest.mark.parametrize("value", [3, ["balloon"], True])
def test_a_class_value_that_is_not_text_is_named(tmp_path, value):
    regions = [
        {
            "shape_attributes": {"name": "point", "cx": 1, "cy": 1},
            "region_attributes": {"class": value},
        }
    ]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="2")))
    assert f"region 0: region attribute 'class' holds {value!r}, not a class name" in record.problem


@pytest.mark.parametrize("r", [1e12, 1e200, 1e300])
def test_a_circle_too_large_to_square_draws_as_any_huge_circle(tmp_path, r):
    """labelme's radius formula overflows past 1e154; PIL draws nothing for a huge circle, so
    such a circle draws as one of radius 1e12 does (and counts as reaching off the image)."""
    regions = [
        {
            "shape_attributes": {"name": "circle", "cx": 3, "cy": 3, "r": r},
            "region_attributes": {"class": "balloon"},
        }
    ]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="2")))
    mask = draw_shapes(record.shapes, 8, 9, VALUES)
    huge = Image.new("L", (9, 8))
    ImageDraw.Draw(huge).ellipse([3 - 1e12, 3 - 1e12, 3 + 1e12, 3 + 1e12], fill=1, outline=1)
    np.testing.assert_array_equal(mask, np.asarray(huge))
    assert not record.shapes[0].inside(9, 8)


def test_an_integer_too_large_for_a_float_is_named(tmp_path):
    regions = [
        {
            "shape_attributes": {"name": "circle", "cx": 3, "cy": 3, "r": 10**400},
            "region_attributes": {"class": "balloon"},
        }
    ]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="2")))
    assert "shape attribute r=1000" in record.problem and "is not a number" in record.problem


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/home/me/a.jpg", "image path '/home/me/a.jpg' is absolute; file names must be relative"),
        ("../a.jpg", "leaves the image folder; file names must be relative to the image folder"),
        ("https://x.org/", "image path '' names no file; file names must be relative"),
    ],
)
def test_a_file_name_outside_the_image_folder_says_how_to_fix_it(tmp_path, filename, expected):
    regions = [
        {
            "shape_attributes": {"name": "point", "cx": 1, "cy": 1},
            "region_attributes": {"class": "balloon"},
        }
    ]
    (record,) = read_via(write(tmp_path, via_doc(regions, style="2", filename=filename)))
    assert expected in record.problem


def test_an_embedded_image_that_is_no_image_is_named_without_python_internals(tmp_path):
    from tests.cli import invoke

    square = {"name": "rect", "x": 0, "y": 0, "width": 3, "height": 3}
    region = {"shape_attributes": square, "region_attributes": {"class": "balloon"}}
    data = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
    path = write(tmp_path, via_doc([region], style="1", filename="a.png", base64_img_data=data))
    result = invoke(["rasterize", path, tmp_path / "ds"])
    assert result.exit_code == 1 and result.exception is None, result.output
    assert "image 'a.png': not a readable image (the embedded image is in no format" in (
        " ".join(result.output.split())
    )
    assert "BytesIO" not in result.output and " at 0x" not in result.output
    assert not (tmp_path / "ds").exists()
