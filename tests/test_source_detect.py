"""Format detection from content: each export recognised, anything else described."""

from __future__ import annotations

import json

import pytest

from segtool.core.errors import SegtoolError
from segtool.sources.detect import detect

SAMPLES = {
    "coco": {"images": [], "annotations": [], "categories": []},
    "via": {"a.jpg1": {"filename": "a.jpg", "size": 1, "regions": []}},
    "labelstudio": [{"id": 1, "data": {"image": "a.jpg"}, "annotations": []}],
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_json_exports_are_recognised_in_a_file_or_its_folder(tmp_path, fmt):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(SAMPLES[fmt]))
    assert detect(path) == (fmt, path)
    assert detect(tmp_path) == (fmt, path)


def test_cvat_xml_and_labelme_folder(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg"}))
    assert detect(tmp_path) == ("labelme", tmp_path)
    xml = tmp_path / "annotations.xml"
    xml.write_text("<?xml version='1.0'?><annotations><version>1.1</version></annotations>")
    assert detect(tmp_path) == ("cvat", xml)


def test_unknown_file_says_what_it_looks_like(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"frames": [], "meta": {}}))
    with pytest.raises(
        SegtoolError,
        match=r"x.json: a JSON object with keys 'frames', 'meta'.*labelme, coco, cvat, via, labelstudio",
    ):
        detect(path)


def test_single_labelme_file_asks_for_its_folder(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"shapes": []}))
    with pytest.raises(SegtoolError, match="pass the folder"):
        detect(path)


def test_two_exports_in_one_folder(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(SAMPLES["coco"]))
    (tmp_path / "b.json").write_text(json.dumps(SAMPLES["via"]))
    with pytest.raises(
        SegtoolError, match=r"several export files \(a.json \(coco\), b.json \(via\)\)"
    ):
        detect(tmp_path)
