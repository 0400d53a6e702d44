"""The class map: labels.txt, classes.json, derivation, palette."""

import json

import numpy as np
import pytest

from segtool.core.classes import (
    derive_class_map,
    make_class_map,
    mode_for,
    read_class_map,
    voc_palette,
)
from segtool.core.constants import MULTICLASS
from segtool.core.errors import SegtoolError


def test_voc_palette_first_colours():
    # The PASCAL VOC colour map as published with the dataset.
    expected = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    assert voc_palette(6).tolist() == expected
    assert voc_palette(256)[255].tolist() == [224, 224, 192]


def test_labels_txt_with_ignore(labels_txt):
    cmap = read_class_map(labels_txt)
    assert cmap.names == ("_background_", "cat", "dog")
    assert cmap.value_of() == {"_background_": 0, "cat": 1, "dog": 2, "__ignore__": 255}
    assert mode_for(cmap.num_classes) == MULTICLASS and cmap.num_classes == 3


def test_labels_txt_without_background_gets_one(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("road\n\nperson\n")
    assert read_class_map(path).names == ("_background_", "road", "person")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__ignore__\ncat\n_background_\n", "line 2 is 'cat'"),
        ("__ignore__\n", "line 2 is 'end of file'"),
        ("_background_\ncat\ncat\n", "'cat' appears twice"),
        ("cat\n_background_\n", "move it before"),
        ("_background_\n__ignore__\n", "may only be the first line"),
        ("\n\n", "empty"),
    ],
)
def test_bad_labels_txt(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(SegtoolError, match=message):
        read_class_map(path)


def test_classes_json_round_trip(tmp_path):
    cmap = make_class_map(["_background_", "road", "car"])
    cmap.save(tmp_path / "classes.json")
    doc = json.loads((tmp_path / "classes.json").read_text())
    assert doc["ignore_index"] == 255
    assert doc["classes"][1] == {"id": 1, "name": "road", "color": [128, 0, 0]}
    assert read_class_map(tmp_path / "classes.json") == cmap


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"classes": [{"id": 0, "name": "bg"}, {"id": 2, "name": "x"}]}, "not 0..1"),
        ({"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "bg"}]}, "appears twice"),
        (
            {"classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "x"}], "ignore_index": 1},
            "ignore_index 1",
        ),
        ({"classes": [{"id": 0, "name": "bg", "color": [0, 0]}]}, "color"),
        ({"labels": []}, 'no "classes" list'),
    ],
)
def test_bad_classes_json(tmp_path, doc, message):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SegtoolError, match=message):
        read_class_map(path)


def test_classes_json_that_does_not_parse(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("{nope")
    with pytest.raises(SegtoolError, match=r"not a readable classes\.json"):
        read_class_map(path)


def test_derived_map_sorts_labels_and_skips_special_names():
    cmap = derive_class_map(["zebra", "ant", "__ignore__", "_background_", "ant"])
    assert cmap.names == ("_background_", "ant", "zebra")


def test_many_classes_switch_to_16_bit():
    cmap = make_class_map(["_background_", *(f"c{i}" for i in range(300))])
    assert cmap.sixteen_bit and cmap.ignore_index == 65535
    assert len(cmap.palette()) == 768
    assert np.array(cmap.colors).shape == (301, 3)


def test_too_many_classes():
    with pytest.raises(SegtoolError, match="more than a 16-bit mask"):
        make_class_map(str(i) for i in range(70000))
