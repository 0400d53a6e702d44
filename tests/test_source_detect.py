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


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps(SAMPLES["coco"])[:-5].encode(), r"not valid JSON \(.*: line 1 column \d+\)"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        ('{"images": "caf\xe9"}'.encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_a_broken_json_file_says_what_is_wrong_with_it(tmp_path, content, expected):
    """A cut-short, too deep or non-UTF-8 export names its problem, not 'none of the formats'."""
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(
        SegtoolError, match=rf"export.json: {expected}.*; fix or re-export the file"
    ):
        detect(path)


@pytest.mark.parametrize("fmt", ["coco", "via", "labelstudio"])
def test_readers_name_the_file_of_too_deep_json(tmp_path, fmt):
    from segtool.rasterize.exports import read_export

    path = tmp_path / "export.json"
    path.write_bytes(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(SegtoolError, match=r"export.json: JSON nested too deeply"):
        read_export(fmt, path, None)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_exports_in_utf16_or_with_a_byte_order_mark_are_read(tmp_path, encoding):
    path = tmp_path / "export.json"
    path.write_bytes(json.dumps(SAMPLES["coco"]).encode(encoding))
    assert detect(path) == ("coco", path)


def test_a_utf16_cvat_file_is_recognised(tmp_path):
    xml = tmp_path / "annotations.xml"
    xml.write_bytes("<?xml version='1.0' encoding='utf-16'?><annotations/>".encode("utf-16"))
    assert detect(xml) == ("cvat", xml)
