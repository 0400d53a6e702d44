"""evaluate on multi-label masks and with --regions: hand tables, self-evaluation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segtool.core.classes import make_class_map
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.core.multilabel import write_multilabel_mask
from segtool.core.regions import parse_regions
from segtool.evaluate.gallery import class_error_maps
from segtool.evaluate.report import evaluate_dirs
from tests.test_multilabel import PRED, REF

BRATS = make_class_map(["_background_", "edema", "necrosis", "enhancing"])
LABELS = [[0, 1, 2], [3, 3, 2], [255, 1, 0]]
# whole = {1, 2, 3} is bit 0, core = {2, 3} bit 1, enhancing = {3} bit 2; 255 -> ignore bit.
REGION_BITS = [[0, 1, 3], [7, 7, 3], [128, 1, 0]]
REGIONS = "whole=1,2,3;core=2,3;enhancing=3"


def multilabel_dataset(root, refs: dict, preds: dict, names=("a", "b")):
    cmap = make_class_map(["_background_", *names], multilabel=True)
    (root / "ds" / "masks").mkdir(parents=True)
    (root / "pred").mkdir()
    cmap.save(root / "ds" / "classes.json")
    for stem, values in refs.items():
        write_multilabel_mask(root / "ds" / "masks" / f"{stem}.png", np.array(values, np.uint8))
    for stem, values in preds.items():
        write_multilabel_mask(root / "pred" / f"{stem}.png", np.array(values, np.uint8))
    return root / "pred", root / "ds" / "masks"


def test_hand_table_through_evaluate(tmp_path):
    pred, ref = multilabel_dataset(tmp_path, {"img": REF}, {"img": PRED})
    summary = evaluate_dirs(pred, ref, jobs=1).summary
    assert summary["multilabel"] is True
    a, b = summary["per_class"]["a"], summary["per_class"]["b"]
    assert (a["tp"], a["fp"], a["fn"], a["dice"], a["iou"]) == (3, 1, 1, 0.75, 0.6)
    assert (b["tp"], b["fp"], b["fn"], b["dice"], b["iou"]) == (3, 0, 2, 0.75, 0.6)
    assert summary["mean"]["dice"] == 0.75
    assert summary["pixel_accuracy"] == 5 / 9
    assert summary["per_image"][0]["dice"] == {"a": 0.75, "b": 0.75}
    assert summary["per_class"]["a"]["hd95"] is not None


def test_same_keys_as_an_exclusive_summary(tmp_path):
    pred, ref = multilabel_dataset(tmp_path / "m", {"img": REF}, {"img": PRED})
    multi = evaluate_dirs(pred, ref, jobs=1).summary
    cmap = make_class_map(["_background_", "a", "b"])
    (tmp_path / "e" / "ds" / "masks").mkdir(parents=True)
    (tmp_path / "e" / "pred").mkdir()
    cmap.save(tmp_path / "e" / "ds" / "classes.json")
    for folder in ("ds/masks", "pred"):
        write_mask(tmp_path / "e" / folder / "img.png", np.array(LABELS) % 3, cmap)
    exclusive = evaluate_dirs(
        tmp_path / "e" / "pred", tmp_path / "e" / "ds" / "masks", jobs=1
    ).summary
    assert set(multi) - set(exclusive) == {"multilabel"}
    assert set(multi["per_class"]["a"]) == set(exclusive["per_class"]["a"])
    assert set(multi["mean"]) == set(exclusive["mean"])


def test_references_against_themselves_score_one(tmp_path):
    rng = np.random.default_rng(0)
    refs = {f"i{n}": rng.integers(0, 8, (20, 24)) for n in range(4)}
    refs["i0"][0, :5] = 128 | 3  # ignore pixels with classes under them
    pred, ref = multilabel_dataset(tmp_path, refs, refs, names=("a", "b", "c"))
    summary = evaluate_dirs(pred, ref, jobs=2).summary
    for row in summary["per_class"].values():
        assert row["dice"] == 1.0 and row["hd95"] == 0.0 and row["fp"] == row["fn"] == 0
    assert summary["pixel_accuracy"] == 1.0


def test_regions_hand_table():
    regions = parse_regions(REGIONS, BRATS)
    assert regions.class_map.names == ("_background_", "whole", "core", "enhancing")
    assert regions.class_map.multilabel
    assert regions.apply(np.array(LABELS, dtype=np.uint8)).tolist() == REGION_BITS


def test_regions_through_evaluate(tmp_path):
    (tmp_path / "ds" / "masks").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    BRATS.save(tmp_path / "ds" / "classes.json")
    write_mask(tmp_path / "ds" / "masks" / "img.png", np.array(LABELS, np.uint8), BRATS)
    # The prediction calls the enhancing pixels necrosis: whole and core stay right.
    prediction = np.array([[0, 1, 2], [2, 2, 2], [0, 1, 0]], np.uint8)
    write_mask(tmp_path / "pred" / "img.png", prediction, BRATS)
    summary = evaluate_dirs(tmp_path / "pred", tmp_path / "ds" / "masks", regions=REGIONS).summary
    per_class = summary["per_class"]
    assert list(per_class) == ["whole", "core", "enhancing"]
    assert (per_class["whole"]["tp"], per_class["whole"]["fp"]) == (6, 0)
    assert (per_class["core"]["tp"], per_class["core"]["fn"]) == (4, 0)
    assert (per_class["enhancing"]["tp"], per_class["enhancing"]["fn"]) == (0, 2)
    assert per_class["enhancing"]["dice"] == 0.0 and summary["multilabel"] is True
    # A region model's predictions are multi-label masks already: read as they are.
    write_multilabel_mask(tmp_path / "pred" / "img.png", np.array(REGION_BITS, np.uint8) & 127)
    again = evaluate_dirs(  # the first report is in PRED: replacing it needs overwrite
        tmp_path / "pred", tmp_path / "ds" / "masks", regions=REGIONS, overwrite=True
    )
    summary = again.summary
    assert [row["dice"] for row in summary["per_class"].values()] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whole=1,2,4", r"region 'whole' names id 4, which is not a foreground class"),
        ("whole=0,1", r"names id 0"),
        ("whole", r"'whole': write name=id,id"),
        ("a=1;a=2", r"region name 'a' is used twice"),
        ("a=x", r"ids must be whole numbers"),
        (";", r"names no region"),
    ],
)
def test_bad_regions(text, message):
    with pytest.raises(SegtoolError, match=message):
        parse_regions(text, BRATS)


def test_regions_on_a_multilabel_map_is_an_error():
    with pytest.raises(SegtoolError, match="already multi-label; drop --regions"):
        parse_regions("a=1", make_class_map(["_background_", "a"], multilabel=True))


def test_mixed_dataset_is_a_clear_error(tmp_path):
    pred, ref = multilabel_dataset(tmp_path, {"img": REF, "old": REF}, {"img": REF, "old": REF})
    cmap = make_class_map(["_background_", "a", "b"])
    write_mask(ref / "old.png", np.array(LABELS) % 3, cmap)
    with pytest.raises(SegtoolError, match="old.png: an exclusive label mask .* multi-label"):
        evaluate_dirs(pred, ref, jobs=1)


def test_bits_beyond_the_map_are_a_clear_error(tmp_path):
    pred, ref = multilabel_dataset(tmp_path, {"img": REF}, {"img": [[4, 0, 0]] * 3})
    with pytest.raises(SegtoolError, match=r"pred/img.png: bit 2 \(class id 3\) is set"):
        evaluate_dirs(pred, ref, jobs=1)


def test_gallery_has_one_error_map_per_class(tmp_path):
    cmap = make_class_map(["_background_", "a", "b"], multilabel=True)
    maps = dict(class_error_maps(np.array(REF, np.uint8), np.array(PRED, np.uint8), cmap))
    green, red, blue = (40, 180, 60), (220, 40, 40), (40, 90, 230)
    assert [tuple(v) for v in maps["a"][0]] == [green, blue, (0, 0, 0)]
    assert tuple(maps["a"][2, 0]) == red
    assert tuple(maps["b"][2, 2]) == blue  # the prediction's ignore bit predicts no class
    pred, ref = multilabel_dataset(tmp_path, {"img": REF}, {"img": PRED})
    result = evaluate_dirs(pred, ref, jobs=1, gallery=1, out=tmp_path / "report")
    with Image.open(result.gallery[0]) as sheet:
        assert sheet.width > 4 * 3  # reference, prediction and two class panels
    html = (tmp_path / "report" / "gallery" / "index.html").read_text()
    assert "img" in html
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["multilabel"] is True


def test_cli_regions_and_bad_regions(tmp_path):

    from tests.cli import invoke

    (tmp_path / "ds" / "masks").mkdir(parents=True)
    BRATS.save(tmp_path / "ds" / "classes.json")
    write_mask(tmp_path / "ds" / "masks" / "img.png", np.array(LABELS, np.uint8), BRATS)
    masks = str(tmp_path / "ds" / "masks")
    args = ["evaluate", masks, masks, "--out", str(tmp_path / "r"), "--regions"]
    result = invoke([*args, REGIONS])
    assert result.exit_code == 0, result.output
    assert "each class scored as its own binary problem" in result.output
    assert "enhancing" in result.output
    result = invoke([*args, "whole=1,9", "--overwrite"])
    assert result.exit_code == 1
    assert "region 'whole' names id 9" in result.output
    assert "Traceback" not in result.output
