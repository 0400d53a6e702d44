"""Multi-label masks: the bit-set codec, its PNG files, the preview and multi-label counting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segtool.core.classes import make_class_map, read_classes_json
from segtool.core.distances import hd95, hd95_multilabel
from segtool.core.errors import SegtoolError
from segtool.core.masks import read_mask, write_mask
from segtool.core.metrics import count_multilabel, dice, iou
from segtool.core.multilabel import (
    decode,
    encode,
    ignore_value,
    mask_bits,
    preview,
    read_multilabel_mask,
    read_multilabel_values,
    write_multilabel_mask,
)

# The 3x3 hand table: classes A (id 1, bit 0) and B (id 2, bit 1) overlap in the middle row.
REF = [[1, 1, 0], [3, 3, 2], [0, 2, 2]]
PRED = [[1, 0, 0], [3, 1, 2], [1, 2, 128]]  # 128: the prediction's ignore bit


def test_depth_follows_the_number_of_classes():
    assert [mask_bits(n) for n in (1, 7, 8, 15, 16, 63)] == [8, 8, 16, 16, 64, 64]
    assert [ignore_value(n) for n in (7, 15, 63)] == [128, 32768, 2**63]
    with pytest.raises(SegtoolError, match=r"64 foreground classes is more than .* \(63\)"):
        mask_bits(64)


@pytest.mark.parametrize("num_foreground", [1, 2, 7, 8, 15, 16, 40, 63])
def test_png_round_trip_at_every_depth(tmp_path: Path, num_foreground: int):
    rng = np.random.default_rng(num_foreground)
    planes = rng.random((num_foreground, 5, 7)) < 0.4
    ignore = rng.random((5, 7)) < 0.2
    values = encode(planes, ignore)
    assert values.dtype.itemsize * 8 == mask_bits(num_foreground)
    path = tmp_path / "m.png"
    write_multilabel_mask(path, values)
    got_planes, got_ignore = read_multilabel_mask(path, num_foreground + 1)
    np.testing.assert_array_equal(got_planes, planes)
    np.testing.assert_array_equal(got_ignore, ignore)


def test_bit_layout_is_the_documented_one(tmp_path: Path):
    # class id c is bit c-1; the top bit is ignore; 64-bit masks are RGBA with R = bits 0-15.
    planes = np.zeros((63, 1, 2), dtype=bool)
    planes[0, 0, 0] = planes[16, 0, 0] = planes[62, 0, 1] = True  # ids 1, 17, 63
    values = encode(planes, np.array([[False, True]]))
    assert int(values[0, 0]) == 1 | 1 << 16
    assert int(values[0, 1]) == 1 << 62 | 1 << 63
    write_multilabel_mask(tmp_path / "m.png", values)
    import cv2

    bgra = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    r, g, b, a = (bgra[0, :, i].tolist() for i in (2, 1, 0, 3))
    assert (r, g, b, a) == ([1, 0], [1, 0], [0, 0], [0, 0x4000 | 0x8000])


def test_small_masks_are_plain_grayscale_pngs(tmp_path: Path):
    write_multilabel_mask(tmp_path / "m.png", np.array(REF, dtype=np.uint8))
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), REF)


def test_bits_for_classes_the_map_lacks_are_an_error(tmp_path: Path):
    write_multilabel_mask(tmp_path / "m.png", np.array([[1, 4]], dtype=np.uint8))
    with pytest.raises(SegtoolError, match=r"m.png: bit 2 \(class id 3\) is set, but the class"):
        read_multilabel_values(tmp_path / "m.png", 3)
    assert read_multilabel_values(tmp_path / "m.png", 4).tolist() == [[1, 4]]


def test_a_depth_that_does_not_fit_the_map_is_an_error(tmp_path: Path):
    write_multilabel_mask(tmp_path / "m.png", np.array([[1, 2]], dtype=np.uint16))
    with pytest.raises(SegtoolError, match="16-bit grayscale PNG, but .* 2 foreground .* 8-bit"):
        read_multilabel_values(tmp_path / "m.png", 3)


def test_exclusive_and_multilabel_masks_do_not_mix(tmp_path: Path):
    cmap = make_class_map(["_background_", "a", "b"])
    write_mask(tmp_path / "exclusive.png", np.array([[0, 1, 2]], dtype=np.uint8), cmap)
    with pytest.raises(SegtoolError, match="exclusive label mask .* in a multi-label dataset"):
        read_multilabel_values(tmp_path / "exclusive.png", 3)
    write_multilabel_mask(tmp_path / "multi.png", np.array([[0, 3]], dtype=np.uint8))
    with pytest.raises(SegtoolError, match="multi.png: a multi-label mask .* exclusive"):
        read_mask(tmp_path / "multi.png")


def test_classes_json_round_trip_and_ignore_bit(tmp_path: Path):
    cmap = make_class_map(["_background_", "a", "b"], multilabel=True)
    assert cmap.ignore_index == 128
    cmap.save(tmp_path / "classes.json")
    doc = json.loads((tmp_path / "classes.json").read_text())
    assert doc["multilabel"] is True and doc["ignore_index"] == 128
    assert read_classes_json(tmp_path / "classes.json") == cmap
    doc["ignore_index"] = 255
    (tmp_path / "classes.json").write_text(json.dumps(doc))
    with pytest.raises(SegtoolError, match="ignore_index 255 of a multi-label map .* 128"):
        read_classes_json(tmp_path / "classes.json")
    exclusive = make_class_map(["_background_", "a"])
    assert "multilabel" not in exclusive.to_json()


def test_preview_blends_overlapping_colours():
    colors = [(0, 0, 0), (200, 0, 0), (0, 100, 50)]
    rgb = preview(np.array([[0, 1, 2, 3, 129]], dtype=np.uint8), 2, colors)
    assert rgb[0].tolist() == [[0, 0, 0], [200, 0, 0], [0, 100, 50], [100, 50, 25], [224, 224, 192]]


# --- counting -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_count_hand_table(dtype):
    # A: reference at (0,0) (0,1) (1,0) (1,1); prediction at (0,0) (1,0) (1,1) (2,0).
    # B: reference at (1,0) (1,1) (1,2) (2,1) (2,2); prediction at (1,0) (1,2) (2,1); the
    # prediction's ignore pixel (2,2) predicts no class, so it is a false negative of B.
    ref, pred = np.array(REF, dtype=dtype), np.array(PRED, dtype=dtype)
    counts, exact, counted = count_multilabel(ref, pred, 3)
    assert counts.tp.tolist() == [0, 3, 3]
    assert counts.fp.tolist() == [0, 1, 0]
    assert counts.fn.tolist() == [0, 1, 2]
    assert dice(counts)[1:].tolist() == [6 / 8, 6 / 8]
    assert iou(counts)[1:].tolist() == [3 / 5, 3 / 5]
    assert (exact, counted) == (5, 9)
    # The reference's ignore bit removes the pixel from every class.
    ref[2, 2] |= 128
    counts, exact, counted = count_multilabel(ref, pred, 3)
    assert counts.fn.tolist() == [0, 1, 1]
    assert (exact, counted) == (5, 8)


def test_absent_class_is_nan():
    ref = np.array([[1, 0]], dtype=np.uint8)
    counts, _, _ = count_multilabel(ref, ref, 3)
    assert dice(counts)[1] == 1.0 and math.isnan(dice(counts)[2])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 15),
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(0, 2**32 - 1),
)
def test_count_matches_per_plane_oracle(num_foreground, height, width, seed):
    rng = np.random.default_rng(seed)
    ref_planes = rng.random((num_foreground, height, width)) < 0.5
    pred_planes = rng.random((num_foreground, height, width)) < 0.5
    ref_ignore = rng.random((height, width)) < 0.2
    pred_ignore = rng.random((height, width)) < 0.2
    ref, pred = encode(ref_planes, ref_ignore), encode(pred_planes, pred_ignore)
    counts, exact, counted = count_multilabel(ref, pred, num_foreground + 1)
    keep = ~ref_ignore
    predicted = pred_planes & ~pred_ignore
    for c in range(num_foreground):
        r, p = ref_planes[c][keep], predicted[c][keep]
        assert counts.tp[c + 1] == np.sum(r & p)
        assert counts.fp[c + 1] == np.sum(~r & p)
        assert counts.fn[c + 1] == np.sum(r & ~p)
    assert counted == keep.sum()
    assert exact == np.sum(np.all(ref_planes == predicted, axis=0) & keep)
    if num_foreground <= 7:  # 8-bit and 16-bit values give the same counts
        wide = count_multilabel(ref.astype(np.uint16), pred.astype(np.uint16), num_foreground + 1)
        np.testing.assert_array_equal(wide[0].tp, counts.tp)
        assert wide[1:] == (exact, counted)


def test_hd95_per_class_removes_reference_ignore():
    ref_planes = np.zeros((2, 12, 12), dtype=bool)
    pred_planes = np.zeros((2, 12, 12), dtype=bool)
    ref_planes[0, 2:6, 2:6] = pred_planes[0, 3:7, 2:6] = True
    ref_planes[1, 5:10, 5:10] = pred_planes[1, 5:10, 6:11] = True
    ignore = np.zeros((12, 12), dtype=bool)
    ignore[:, 10:] = True
    got = hd95_multilabel(encode(ref_planes, ignore), encode(pred_planes), [1, 2], 3)
    keep = ~ignore
    expected = [hd95(ref_planes[c] & keep, pred_planes[c] & keep) for c in range(2)]
    assert got.tolist() == expected


def test_decode_is_the_inverse_of_encode():
    planes = np.array([[[True, False]], [[True, True]]])
    values = encode(planes, np.array([[False, True]]))
    assert values.tolist() == [[3, 2 | 128]]
    got, ignore = decode(values, 2)
    np.testing.assert_array_equal(got, planes)
    assert ignore.tolist() == [[False, True]]
