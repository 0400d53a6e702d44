"""Class-colour legends: under predict's overlays and evaluate's gallery sheets, a swatch in the
class map's colour beside each class name shown (and the error map's colours on sheets)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.legend import LINE, SWATCH, present_ids, with_legend
from segtool.core.masks import write_mask
from segtool.evaluate.gallery import FN, FP, IGNORED, TP
from segtool.evaluate.report import evaluate_dirs
from segtool.predict.writing import overlay, overlay_with_legend

CMAP = make_class_map(["_background_", "road", "car", "sign"])


def _positions(picture: Image.Image, top: int, colours) -> list[tuple[int, int] | None]:
    """Where each colour first fills a swatch of the legend starting at row `top`: (line, x)
    on the middle row of each legend line; None where it is absent."""
    pixels = np.asarray(picture.convert("RGB"))
    rows = range(top + 3 + SWATCH // 2, pixels.shape[0], LINE)
    where = []
    for colour in colours:
        hits = [
            (line, int(x[0]))
            for line, y in enumerate(rows)
            if (x := np.flatnonzero((pixels[y] == colour).all(axis=-1))).size
        ]
        where.append(hits[0] if hits else None)
    return where


def test_present_ids_label_and_multilabel_masks():
    labels = np.array([[0, 2, 255], [2, 3, 0]], np.uint8)
    assert present_ids(CMAP, labels) == [0, 2, 3]  # the ignore value is no class
    assert present_ids(CMAP, labels, background=False) == [2, 3]
    bits = make_class_map(["_background_", "a", "b", "c"], multilabel=True)
    assert present_ids(bits, np.array([[0b001, 0b101]], np.uint8)) == [1, 3]


def test_legend_swatches_are_the_class_colours_in_order():
    picture = Image.new("RGB", (200, 30), (10, 200, 10))
    entries = [("road", (128, 0, 0)), ("car", (0, 128, 0))]
    out = with_legend(picture, entries)
    assert out.size == (200, 30 + LINE + 4)
    np.testing.assert_array_equal(np.asarray(out)[:30], np.asarray(picture))
    road, car = _positions(out, 30, [(128, 0, 0), (0, 128, 0)])
    assert road is not None and car is not None and road < car
    assert with_legend(picture, []) is picture


def test_a_legend_wider_than_the_picture_wraps():
    entries = [(f"class number {i}", (i * 20, 0, 0)) for i in range(8)]
    out = with_legend(Image.new("RGB", (120, 10)), entries)
    assert out.height > 10 + 3 * LINE


def test_overlay_legend_names_the_painted_classes_in_their_colours():
    image = np.full((20, 200, 3), 255, np.uint8)
    labels = np.zeros((20, 200), np.uint8)
    labels[:, 10:20] = 3  # sign
    labels[:, 30:40] = 1  # road
    picture = overlay_with_legend(image, labels, CMAP)
    np.testing.assert_array_equal(
        np.asarray(picture)[:20], np.asarray(overlay(image, labels, CMAP))
    )
    # road then sign, in id order; car is not painted, so not listed
    road, car, sign = _positions(picture, 20, [tuple(CMAP.colors[c]) for c in (1, 2, 3)])
    assert road is not None and sign is not None and road < sign and car is None


def test_predict_overlays_carry_the_legend(tmp_path):
    from segtool.predict.writing import Outputs, Writer

    labels = np.zeros((24, 64), np.uint8)
    labels[5:10, 5:30] = 2
    with Writer(Outputs(tmp_path, CMAP, overlays=True), 1) as writer:
        writer.submit([(tmp_path / "x.jpg", labels, None, np.zeros((24, 64, 3), np.uint8))])
        writer.wait()
    saved = Image.open(tmp_path / "overlays" / "x.jpg")
    assert saved.size == overlay_with_legend(np.zeros((24, 64, 3), np.uint8), labels, CMAP).size
    assert saved.height > 24


def test_gallery_sheets_carry_class_and_error_legends(tmp_path):
    (tmp_path / "ds").mkdir()
    CMAP.save(tmp_path / "ds" / "classes.json")
    reference = np.zeros((40, 40), np.uint8)
    reference[5:20, 5:30] = 1
    prediction = reference.copy()
    prediction[25:35, 5:15] = 2  # a car where there is none
    for folder, mask in (("ds/masks", reference), ("pred", prediction)):
        (tmp_path / folder).mkdir()
        write_mask(tmp_path / folder / "a.png", mask, CMAP)
    result = evaluate_dirs(tmp_path / "pred", tmp_path / "ds/masks", jobs=1, gallery=1)
    sheet = Image.open(result.gallery[0])
    panel_height = 40 + 16  # the panel and its title
    assert sheet.height > panel_height + LINE  # the legend wraps under the 132 px sheet
    # every class in the masks, then every error colour, left to right
    expected = [tuple(CMAP.colors[c]) for c in (0, 1, 2)] + [TP, FP, FN, IGNORED]
    where = _positions(sheet, panel_height, expected)
    assert None not in where and where == sorted(where), where
    assert _positions(sheet, panel_height, [tuple(CMAP.colors[3])]) == [None]  # sign: absent
