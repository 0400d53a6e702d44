"""Predicted masks -> annotation files -> segtool's own readers and drawing -> the same masks.

The round-trip contract of ``predict --as``: for every format, on random masks with holes,
touching parts of different classes and one-pixel parts, the file written for a mask reads and
draws back to that mask pixel for pixel at the default tolerance (COCO's RLE always). The
masks are drawn by segtool's rasterizer (labelme's rule, pycocotools for COCO), the files read
by the readers ``segtool rasterize`` uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segtool.core.errors import SegtoolError
from segtool.rasterize.draw import draw_multilabel, draw_shapes
from segtool.rasterize.exports import read_export
from segtool.sources.labelme import parse_labelme
from segtool.sources.writers.formats import (
    ANNOTATION_FORMATS,
    PredictedImage,
    annotation_format,
    shapes_of,
    write_document,
)
from segtool.sources.writers.polygons import painted_regions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NAMES = ("_background_", "cat", "dog", "bird")
VALUE_OF = {name: i for i, name in enumerate(NAMES)}


def write_and_read(fmt_name: str, labels: np.ndarray, folder: Path, **options) -> np.ndarray:
    """`labels` written as `fmt_name` into `folder`, read back and drawn as rasterize draws."""
    fmt = ANNOTATION_FORMATS[fmt_name]
    height, width = labels.shape[-2:]
    item = PredictedImage("a.png", width, height, **shapes_of(fmt, labels, NAMES, **options))
    doc = write_document(fmt, [item], NAMES, "test-model")
    if fmt.file is None:
        path = folder / "a.json"
        path.write_text(json.dumps(doc[0]))
        shapes = parse_labelme(path).shapes
    else:
        path = folder / fmt.file
        path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        (record,) = read_export(fmt_name, path, folder)
        assert record.problem is None, record.problem
        shapes = record.shapes
    if labels.ndim == 3:
        return draw_multilabel(shapes, height, width, VALUE_OF, len(NAMES) - 1)
    return draw_shapes(shapes, height, width, VALUE_OF)


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """Small label masks: blocks of classes (touching parts, rings around holes when a class
    surrounds another), with single pixels of any class sprinkled over them."""
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    scale = draw(st.integers(1, 4))
    blocks = draw(arrays(np.uint8, (rows, cols), elements=st.integers(0, len(NAMES) - 1)))
    labels = np.kron(blocks, np.ones((scale, scale), np.uint8))
    dots = draw(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 3))))
    for y, x, value in dots:
        labels[y % labels.shape[0], x % labels.shape[1]] = value
    return labels


def ring_with_hole_and_dot() -> np.ndarray:
    """A class-1 ring around a hole of background holding a one-pixel class-2 part, next to a
    class-3 block touching the ring."""
    labels = np.zeros((9, 12), np.uint8)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 0
    labels[4, 4] = 2
    labels[2:7, 8:11] = 3
    return labels


@pytest.mark.parametrize("fmt", sorted(ANNOTATION_FORMATS))
def test_a_ring_with_a_hole_comes_back(fmt: str, tmp_path: Path) -> None:
    labels = ring_with_hole_and_dot()
    assert np.array_equal(write_and_read(fmt, labels, tmp_path), labels)


@pytest.mark.parametrize("fmt", sorted(ANNOTATION_FORMATS))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.one_of(
        masks(),
        arrays(
            np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 3)
        ),
    )
)
def test_round_trip_is_pixel_identical(fmt: str, labels: np.ndarray, tmp_path: Path) -> None:
    assert np.array_equal(write_and_read(fmt, labels, tmp_path), labels)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(planes=arrays(bool, st.tuples(st.just(3), st.integers(1, 10), st.integers(1, 10))))
def test_multilabel_planes_round_trip_through_coco(planes: np.ndarray, tmp_path: Path) -> None:
    bits = sum(planes[c].astype(np.uint8) << c for c in range(3))
    assert np.array_equal(write_and_read("coco", planes, tmp_path), bits)


def test_holes_are_background_shapes_drawn_after_their_part() -> None:
    regions = painted_regions(ring_with_hole_and_dot(), NAMES)
    order = [(r.label, r.pixels) for r in regions]
    # The ring (filled: 49 pixels) first, its hole (8 background pixels) after it, the dot last.
    assert order.index(("cat", 40)) < order.index(("_background_", 8)) < order.index(("dog", 1))
    assert all(len(r.points) >= 3 for r in regions)
    assert ("_background_", 8) in order and len(order) == 4  # the outer background is not drawn


def test_simplification_drops_vertices_and_stays_close(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:60, :60]
    labels = (((yy - 30) ** 2 + (xx - 30) ** 2) < 20**2).astype(np.uint8)
    exact = painted_regions(labels, NAMES)
    simple = painted_regions(labels, NAMES, tolerance=1.0)
    assert len(simple[0].points) < len(exact[0].points) / 2
    back = write_and_read("labelme", labels, tmp_path, tolerance=1.0)
    iou = (back & labels).sum() / (back | labels).sum()
    assert 0.97 < iou < 1.0


def test_scores_are_the_mean_confidence_of_each_part() -> None:
    labels = np.zeros((4, 6), np.uint8)
    labels[:, :2] = 1
    confidence = np.full(labels.shape, 0.5)
    confidence[:, 0] = 0.9
    (region,) = painted_regions(labels, NAMES, confidence=confidence)
    assert region.score == pytest.approx(0.7)


def test_a_multilabel_run_is_refused_for_polygon_formats() -> None:
    for name in ("labelme", "cvat", "via", "labelstudio"):
        with pytest.raises(SegtoolError, match=f"--as {name}: the run is multi-label.*--as coco"):
            annotation_format(name, multilabel=True)
    assert annotation_format("coco", multilabel=True).overlapping


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(SegtoolError, match="--simplify -1"):
        painted_regions(np.zeros((2, 2), np.uint8), NAMES, tolerance=-1)
