"""Label Studio JSON export: percent coordinates, rotation and brush RLE against a reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_shapes
from segtool.sources.labelstudio import decode_brush_rle, read_labelstudio
from tests.source_reference import composite

VALUES = {"_background_": 0, "cat": 1, "dog": 2}
W, H = 30, 20


def encode_brush(values: np.ndarray, *, literal_every: int = 3) -> list[int]:
    """Label Studio's rle-pack stream, written independently: 8-bit words, run lengths in
    4/8/12/16-bit fields; every `literal_every`-th run is written as a literal block."""
    bits: list[str] = []

    def put(value: int, width: int) -> None:
        bits.append(format(value, f"0{width}b"))

    put(len(values), 32)
    put(8 - 1, 5)
    widths = [4, 8, 12, 16]
    for w in widths:
        put(w - 1, 4)
    flat = values.tolist()
    i, block = 0, 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i] and j - i < 1 << 16:
            j += 1
        n = j - i
        sel = next(k for k, w in enumerate(widths) if n - 1 < 1 << w)
        if block % literal_every == 2 and n <= 16:
            put(0, 1)
            put(sel, 2)
            put(n - 1, widths[sel])
            for v in flat[i:j]:
                put(v, 8)
        else:
            put(1, 1)
            put(sel, 2)
            put(n - 1, widths[sel])
            put(flat[i], 8)
        i, block = j, block + 1
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k : k + 8], 2) for k in range(0, len(stream), 8)]


def brush_result(mask: np.ndarray, label: str) -> dict:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    return {
        "type": "brushlabels",
        "original_width": mask.shape[1],
        "original_height": mask.shape[0],
        "value": {"format": "rle", "rle": encode_brush(rgba.ravel()), "brushlabels": [label]},
    }


def task(results: list[dict], image: str = "/data/upload/1/3f2a9b1c-a.jpg", **extra) -> dict:
    return {
        "id": 1,
        "data": {"image": image},
        "annotations": [{"id": 5, "was_cancelled": False, "result": results}],
        **extra,
    }


def write(tmp: Path, doc) -> Path:
    path = tmp / "export.json"
    path.write_text(json.dumps(doc))
    return path


def reference(results: list[dict]) -> np.ndarray:
    spec = []
    for r in results:
        v = r["value"]
        sx, sy = r["original_width"] / 100, r["original_height"] / 100
        if r["type"] == "polygonlabels":
            spec.append(
                (
                    "polygon",
                    [(x * sx, y * sy) for x, y in v["points"]],
                    VALUES[v["polygonlabels"][0]],
                )
            )
        elif r["type"] == "rectanglelabels":
            x, y = v["x"] * sx, v["y"] * sy
            spec.append(
                (
                    "box",
                    (x, y, x + v["width"] * sx, y + v["height"] * sy, v.get("rotation", 0), (x, y)),
                    VALUES[v["rectanglelabels"][0]],
                )
            )
        else:
            flat, i = [], 0  # decode by a second, plain reading of the bit stream
            bits = "".join(format(b, "08b") for b in v["rle"])
            total, i = int(bits[:32], 2), 32
            word = int(bits[i : i + 5], 2) + 1
            i += 5
            widths = [int(bits[i + 4 * k : i + 4 * k + 4], 2) + 1 for k in range(4)]
            i += 16
            while len(flat) < total:
                rep = bits[i] == "1"
                sel = int(bits[i + 1 : i + 3], 2)
                n = int(bits[i + 3 : i + 3 + widths[sel]], 2) + 1
                i += 3 + widths[sel]
                if rep:
                    flat += [int(bits[i : i + word], 2)] * n
                    i += word
                else:
                    for _ in range(n):
                        flat.append(int(bits[i : i + word], 2))
                        i += word
            alpha = np.array(flat).reshape(r["original_height"], r["original_width"], 4)[:, :, 3]
            spec.append(("patch", (0, 0, alpha > 0), VALUES[v["brushlabels"][0]]))
    return composite(spec, H, W)


pct = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def result(draw_):
    kind = draw_(st.sampled_from(["polygonlabels", "rectanglelabels", "brushlabels"]))
    label = draw_(st.sampled_from(["cat", "dog"]))
    if kind == "brushlabels":
        bits = draw_(st.lists(st.booleans(), min_size=W * H, max_size=W * H))
        return brush_result(np.array(bits).reshape(H, W), label)
    base = {"type": kind, "original_width": W, "original_height": H, "image_rotation": 0}
    if kind == "polygonlabels":
        pts = draw_(st.lists(st.tuples(pct, pct), min_size=3, max_size=6))
        return {**base, "value": {"points": [list(p) for p in pts], "polygonlabels": [label]}}
    x, y = draw_(st.floats(0, 60)), draw_(st.floats(0, 60))
    w, h = draw_(st.floats(0, 40)), draw_(st.floats(0, 40))
    rotation = draw_(st.sampled_from([0, 0, 10, 45]))
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    t = math.radians(rotation)
    for cx, cy in corners:  # keep only rectangles that stay on the image once turned
        dx, dy = (cx - x) * W / 100, (cy - y) * H / 100
        px = x + (dx * math.cos(t) - dy * math.sin(t)) * 100 / W
        py = y + (dx * math.sin(t) + dy * math.cos(t)) * 100 / H
        if not (0 <= px <= 100 and 0 <= py <= 100):
            rotation = 0
    return {
        **base,
        "value": {
            "x": x,
            "y": y,
            "width": w,
            "height": h,
            "rotation": rotation,
            "rectanglelabels": [label],
        },
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(results=st.lists(result(), max_size=5))
def test_regions_match_the_reference(tmp_path, results):
    (record,) = read_labelstudio(write(tmp_path, [task(results)]))
    assert record.problem is None
    np.testing.assert_array_equal(draw_shapes(record.shapes, H, W, VALUES), reference(results))


def test_brush_decoder_round_trip():
    rng = np.random.default_rng(1)
    values = np.repeat(rng.integers(0, 256, 300), rng.integers(1, 40, 300)).astype(np.uint8)
    np.testing.assert_array_equal(decode_brush_rle(encode_brush(values)), values)


def test_upload_prefix_is_dropped_when_the_file_has_none(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (record,) = read_labelstudio(write(tmp_path, [task([])]))
    assert record.name == "a.jpg" and record.image == tmp_path / "a.jpg"


def test_first_finished_annotation_is_used(tmp_path):
    square = {
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 0, "y": 0, "width": 10, "height": 10, "rectanglelabels": ["dog"]},
    }
    doc = [
        {
            "id": 1,
            "data": {"image": "a.jpg"},
            "annotations": [
                {"was_cancelled": True, "result": []},
                {"was_cancelled": False, "result": [square]},
            ],
        }
    ]
    (record,) = read_labelstudio(write(tmp_path, doc))
    assert [s.label for s in record.shapes] == ["dog"] and (record.width, record.height) == (W, H)


# --- bad inputs -----------------------------------------------------------------------------


def test_coordinates_beyond_100_percent(tmp_path):
    poly = {
        "type": "polygonlabels",
        "id": "r1",
        "original_width": W,
        "original_height": H,
        "value": {"points": [[0, 0], [101, 0], [50, 50]], "polygonlabels": ["cat"]},
    }
    (record,) = read_labelstudio(write(tmp_path, [task([poly])]))
    assert (
        "task 1, image '3f2a9b1c-a.jpg': region 0 ('r1'): point (101 %, 0 %) lies beyond"
        in record.problem
    )


def test_brush_size_disagreeing_with_original_size(tmp_path):
    brush = brush_result(np.ones((4, 5), bool), "cat")
    brush["original_width"] = 6
    (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
    assert "not 6 x 4 x 4 (RGBA)" in record.problem


def test_sizes_disagreeing_between_regions(tmp_path):
    a = brush_result(np.ones((4, 5), bool), "cat")
    b = brush_result(np.ones((5, 5), bool), "cat")
    (record,) = read_labelstudio(write(tmp_path, [task([a, b])]))
    assert "original size 5 x 5 disagrees with another region's 5 x 4" in record.problem


def test_two_labels_and_no_label(tmp_path):
    rect = {
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 0, "y": 0, "width": 1, "height": 1, "rectanglelabels": ["cat", "dog"]},
    }
    (record,) = read_labelstudio(write(tmp_path, [task([rect])]))
    assert "keep exactly one" in record.problem
    rect["value"]["rectanglelabels"] = []
    (record,) = read_labelstudio(write(tmp_path, [task([rect])]))
    assert "it has no label" in record.problem


def test_not_labelstudio(tmp_path):
    with pytest.raises(SegtoolError, match="not a Label Studio JSON export"):
        read_labelstudio(write(tmp_path, {"images": []}))


def test_a_brush_count_claiming_gigabytes_is_refused_before_decoding(tmp_path):
    import tracemalloc

    brush = brush_result(np.ones((4, 5), bool), "cat")
    brush["value"]["rle"][:4] = [255, 255, 255, 255]  # the 32-bit value count: 4 G values
    tracemalloc.start()
    try:
        (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "holds 4294967295 values, not 5 x 4 x 4 (RGBA)" in record.problem
    assert peak < 50_000_000


@pytest.mark.parametrize("rle", [["a", "b"], [True, None], [1.5, 2], [[1, 2]], [256]])
def test_brush_rle_of_non_bytes_is_named(tmp_path, rle):
    brush = brush_result(np.ones((4, 5), bool), "cat")
    brush["value"]["rle"] = rle
    (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
    assert "brush rle is damaged (the rle holds values outside 0..255)" in record.problem


@pytest.mark.parametrize("rotation", ["30", math.inf, math.nan, [1]])
def test_ellipse_rotation_that_is_no_number_is_named(tmp_path, rotation):
    ellipse = {
        "type": "ellipselabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 50, "y": 50, "radiusX": 10, "radiusY": 5, "ellipselabels": ["cat"]},
    }
    ellipse["value"]["rotation"] = rotation
    (record,) = read_labelstudio(write(tmp_path, [task([ellipse])]))
    assert f"rotation={rotation!r} is not a number" in record.problem


@pytest.mark.parametrize("image", ["http://host/", "/data/upload/..", "."])
def test_an_image_reference_without_a_file_name_is_named(tmp_path, image):
    (record,) = read_labelstudio(write(tmp_path, [task([], image=image)]))
    assert f"its data.image {image!r} names no file" in record.problem
    assert record.image is None


def test_an_original_size_that_is_not_whole_is_named(tmp_path):
    brush = brush_result(np.ones((4, 5), bool), "cat")
    brush["original_width"] = 5.0
    (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
    assert "original_width/height (5.0, 4) are not positive whole numbers" in record.problem


def test_integers_too_large_for_a_float_are_named(tmp_path):
    brush = brush_result(np.ones((4, 5), bool), "cat")
    brush["original_width"] = 10**400
    (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
    assert "original_width/height (1000" in record.problem
    poly = {
        "type": "polygonlabels",
        "original_width": W,
        "original_height": H,
        "value": {"points": [[0, 0], [10**400, 0], [50, 50]], "polygonlabels": ["cat"]},
    }
    (record,) = read_labelstudio(write(tmp_path, [task([poly])]))
    assert "points are not a list of [x %, y %]" in record.problem


def test_an_original_size_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """A brush stream of a few hundred bytes can fill a size-consistent 4 G value canvas."""
    from segtool.core.limits import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "19")
    brush = brush_result(np.ones((4, 5), bool), "cat")
    (record,) = read_labelstudio(write(tmp_path, [task([brush])]))
    assert "original size 5 x 4 = 20 pixels is over the limit of 19" in record.problem
