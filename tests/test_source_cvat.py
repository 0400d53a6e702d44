"""CVAT for images 1.1 XML: regions drawn as the slow reference draws them; bad files refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import binary_dilation

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_shapes
from segtool.sources.cvat import read_cvat
from tests.source_reference import composite

VALUES = {"_background_": 0, "car": 1, "road": 2, "__ignore__": 255}


def cvat_xml(images: list[tuple[str, int, int, list[str]]]) -> str:
    """A CVAT for images 1.1 document; each image's shapes given as XML strings."""
    body = "".join(
        f'<image id="{i}" name="{name}" width="{w}" height="{h}">{"".join(shapes)}</image>'
        for i, (name, w, h, shapes) in enumerate(images)
    )
    meta = "<meta><task><labels><label><name>car</name></label></labels></task></meta>"
    return f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>{meta}{body}</annotations>'


def write(tmp: Path, text: str) -> Path:
    path = tmp / "annotations.xml"
    path.write_text(text)
    return path


def cvat_rle(patch: np.ndarray) -> str:
    """Row-major runs across the patch, background first (written here, read by segtool)."""
    runs, value, count = [], False, 0
    for v in patch.ravel().tolist():
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    return ", ".join(map(str, runs))


def reference(path: Path) -> dict[str, np.ndarray]:
    """Parse with the standard library and draw region by region (z_order, then file order)."""
    out = {}
    for image in ET.parse(path).getroot().iter("image"):
        w, h = int(image.get("width")), int(image.get("height"))
        regions = []
        for k, el in enumerate(image):
            value = VALUES[el.get("label")]
            z = int(el.get("z_order", "0"))
            pts = [
                tuple(map(float, p.split(","))) for p in (el.get("points") or "").split(";") if p
            ]
            if el.tag == "polygon":
                regions.append((z, k, "polygon", pts, value))
            elif el.tag == "polyline":
                regions.append((z, k, "polyline", pts, value))
            elif el.tag == "points":
                regions += [(z, k, "point", p, value) for p in pts]
            elif el.tag == "box":
                x1, y1, x2, y2 = (float(el.get(a)) for a in ("xtl", "ytl", "xbr", "ybr"))
                rot = float(el.get("rotation", "0"))
                regions.append(
                    (z, k, "box", (x1, y1, x2, y2, rot, ((x1 + x2) / 2, (y1 + y2) / 2)), value)
                )
            elif el.tag == "ellipse":
                cx, cy, rx, ry = (float(el.get(a)) for a in ("cx", "cy", "rx", "ry"))
                regions.append((z, k, "ellipse", (cx, cy, rx, ry), value))
            elif el.tag == "mask":
                left, top, mw, mh = (int(el.get(a)) for a in ("left", "top", "width", "height"))
                counts = [int(c) for c in el.get("rle").split(",")]
                flat, bit = [], 0
                for c in counts:
                    flat += [bit] * c
                    bit = 1 - bit
                patch = np.array(flat, bool).reshape(mh, mw)
                regions.append((z, k, "patch", (left, top, patch), value))
        regions.sort(key=lambda r: (r[0], r[1]))
        out[image.get("name")] = composite([r[2:] for r in regions], h, w)
    return out


def ours(path: Path) -> dict[str, np.ndarray]:
    return {r.name: draw_shapes(r.shapes, r.height, r.width, VALUES) for r in read_cvat(path)}


coord = st.floats(min_value=-4, max_value=30, allow_nan=False).map(lambda v: round(v, 2))
label = st.sampled_from(["car", "road"])
z = st.integers(-1, 2)


@st.composite
def region(draw_):
    kind = draw_(st.sampled_from(["polygon", "polyline", "points", "box", "ellipse", "mask"]))
    lab, zo = draw_(label), draw_(z)
    if kind in ("polygon", "polyline", "points"):
        n = draw_(st.integers(3 if kind == "polygon" else (2 if kind == "polyline" else 1), 6))
        pts = ";".join(f"{draw_(coord)},{draw_(coord)}" for _ in range(n))
        return f'<{kind} label="{lab}" z_order="{zo}" points="{pts}"/>'
    if kind == "box":
        rot = draw_(st.sampled_from([0, 0, 30.5, 90, 200]))
        x1, y1 = draw_(coord), draw_(coord)
        return (
            f'<box label="{lab}" z_order="{zo}" xtl="{x1}" ytl="{y1}" '
            f'xbr="{x1 + draw_(st.integers(0, 12))}" ybr="{y1 + draw_(st.integers(0, 12))}" rotation="{rot}"/>'
        )
    if kind == "ellipse":
        return (
            f'<ellipse label="{lab}" z_order="{zo}" cx="{draw_(coord)}" cy="{draw_(coord)}" '
            f'rx="{draw_(st.integers(0, 9))}" ry="{draw_(st.integers(0, 9))}"/>'
        )
    mw, mh = draw_(st.integers(1, 8)), draw_(st.integers(1, 8))
    bits = draw_(st.lists(st.booleans(), min_size=mw * mh, max_size=mw * mh))
    patch = np.array(bits).reshape(mh, mw)
    left, top = draw_(st.integers(-3, 25)), draw_(st.integers(-3, 25))
    return (
        f'<mask label="{lab}" z_order="{zo}" rle="{cvat_rle(patch)}" left="{left}" top="{top}" '
        f'width="{mw}" height="{mh}"/>'
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shapes=st.lists(region(), max_size=7), w=st.integers(1, 28), h=st.integers(1, 28))
def test_regions_match_the_reference(tmp_path, shapes, w, h):
    path = write(tmp_path, cvat_xml([("a.jpg", w, h, shapes)]))
    expected, got = reference(path), ours(path)
    np.testing.assert_array_equal(got["a.jpg"], expected["a.jpg"])


def test_z_order_beats_file_order(tmp_path):
    shapes = [
        '<box label="car" z_order="1" xtl="0" ytl="0" xbr="5" ybr="5"/>',
        '<box label="road" z_order="0" xtl="0" ytl="0" xbr="5" ybr="5"/>',
    ]
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", 8, 8, shapes)])))
    assert [s.label for s in record.shapes] == ["road", "car"]
    assert draw_shapes(record.shapes, 8, 8, VALUES)[2, 2] == 1


def test_rotated_ellipse_is_the_turned_ellipse(tmp_path):
    shapes = [
        '<ellipse label="car" cx="20" cy="20" rx="12" ry="5" rotation="90"/>',
        '<ellipse label="road" cx="20" cy="20" rx="5" ry="12"/>',
    ]
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", 40, 40, shapes)])))
    turned = draw_shapes(record.shapes[:1], 40, 40, VALUES) > 0
    upright = draw_shapes(record.shapes[1:], 40, 40, VALUES) > 0
    # The turned ellipse is a polygon, the upright one PIL's ellipse: they differ only along
    # the outline.
    assert not (turned & ~binary_dilation(upright)).any()
    assert not (upright & ~binary_dilation(turned)).any()
    assert (turned != upright).sum() <= 0.15 * upright.sum()


def test_images_folder_beside_the_xml_is_the_default(tmp_path):
    (tmp_path / "images").mkdir()
    (record,) = read_cvat(write(tmp_path, cvat_xml([("x/a.jpg", 4, 4, [])])))
    assert record.image == tmp_path / "images" / "x" / "a.jpg"


# --- bad inputs -----------------------------------------------------------------------------


def test_malformed_xml(tmp_path):
    with pytest.raises(SegtoolError, match=r"annotations.xml: not well-formed XML"):
        read_cvat(write(tmp_path, "<annotations><image name='a.jpg'></annotations>"))


def test_entity_expansion_bomb_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        '<annotations><image id="0" name="&lol3;" width="4" height="4"/></annotations>'
    )
    with pytest.raises(
        SegtoolError, match=r"annotations.xml: refused: .*document type or entities"
    ):
        read_cvat(write(tmp_path, bomb))


def test_unknown_shape_kind_names_the_region(tmp_path):
    shapes = ['<cuboid label="car" xtl1="0" ytl1="0"/>']
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", 4, 4, shapes)])))
    assert "image 'a.jpg', <cuboid> 0 ('car'): unknown shape kind <cuboid>" in record.problem


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ('<polygon label="car" points="0,0;1,1"/>', "at least 3 points"),
        ('<polygon points="0,0;1,1;2,0"/>', "no label"),
        ('<box label="car" xtl="a" ytl="0" xbr="1" ybr="1"/>', "xtl='a' is not a number"),
        ('<mask label="car" rle="1, 2" left="0" top="0" width="2" height="2"/>', "covers 3 pixels"),
    ],
)
def test_bad_regions_are_named(tmp_path, shape, expected):
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", 4, 4, [shape])])))
    assert expected in record.problem
    assert "<" in record.problem and "image 'a.jpg'" in record.problem


def test_video_export_is_refused(tmp_path):
    with pytest.raises(SegtoolError, match="CVAT for images 1.1"):
        read_cvat(write(tmp_path, "<annotations><track id='0' label='car'/></annotations>"))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ('<box label="car" xtl="0" ytl="0" xbr="2" ybr="2" rotation="nan"/>', "rotation='nan'"),
        ('<box label="car" xtl="0" ytl="0" xbr="2" ybr="2" rotation="inf"/>', "rotation='inf'"),
        ('<box label="car" xtl="0" ytl="0" xbr="2" ybr="2" rotation="x"/>', "rotation='x' is"),
        ('<ellipse label="car" cx="1" cy="1" rx="1" ry="1" rotation="nan"/>', "rotation='nan'"),
        ('<polygon label="car" points="0,0;1,1;2,0" z_order="1.5"/>', "z_order '1.5' is not"),
        ('<mask label="car" rle="5,-1" left="0" top="0" width="2" height="2"/>', "negative run"),
        # A mask box claiming gigabytes, or placed where no integer reaches, is damaged.
        (
            '<mask label="car" rle="0,4" left="-1e300" top="0" width="2" height="2"/>',
            "its box (left -1e+300, top 0) cannot be a mask of this image",
        ),
        (
            '<mask label="car" rle="0,10000000000" left="0" top="0" width="100000" '
            'height="100000"/>',
            "its box (100000 x 100000 = 10,000,000,000 pixels is over the limit",
        ),
    ],
)
def test_numbers_that_cannot_be_drawn_are_named(tmp_path, shape, expected):
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", 4, 4, [shape])])))
    assert expected in record.problem
    assert "image 'a.jpg', <" in record.problem


def test_an_image_without_a_size_reads_none_of_its_shapes(tmp_path):
    shape = (
        '<mask label="car" rle="0,10000000000" left="0" top="0" width="100000" height="100000"/>'
    )
    (record,) = read_cvat(write(tmp_path, cvat_xml([("a.jpg", "", 4, [shape])])))
    assert "width/height '' x '4' are not whole numbers" in record.problem


@pytest.mark.parametrize("encoding", ["UTF-7", "bogus"])
def test_an_encoding_expat_cannot_read_is_named(tmp_path, encoding):
    text = f'<?xml version="1.0" encoding="{encoding}"?><annotations/>'
    with pytest.raises(SegtoolError, match=r"annotations.xml: an XML encoding .*save it as UTF-8"):
        read_cvat(write(tmp_path, text))
