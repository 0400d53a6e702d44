"""The options of rasterize_dir and import_masks travel as frozen specs: a spec, keyword
arguments that build one, or a spec with keywords replacing some fields, give the same
dataset; a bad value is refused when the spec is built, an unknown option as Python does."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest

from segtool import rasterize_dir
from segtool.core.errors import SegtoolError
from segtool.rasterize.import_masks import import_masks
from segtool.rasterize.spec import ImportSpec, RasterizeSpec
from tests.conftest import shape, write_labelme
from tests.test_import_masks import pair


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_a_spec_keywords_and_a_spec_with_replacements_give_one_dataset(tmp_path):
    ann = tmp_path / "ann"
    write_labelme(ann, "one", [shape("cat", [[1, 1], [8, 1], [8, 6]])])
    write_labelme(ann, "two", [shape("dog", [[3, 3], [5, 5]], "rectangle")])
    (tmp_path / "labels.txt").write_text("_background_\ncat\ndog\n")
    labels = tmp_path / "labels.txt"
    rasterize_dir(ann, tmp_path / "a", labels=labels, jobs=1, images="none", instances=True)
    spec = RasterizeSpec(labels=labels, jobs=1, images="none", instances=True)
    rasterize_dir(ann, tmp_path / "b", spec)
    rasterize_dir(
        ann, tmp_path / "c", RasterizeSpec(jobs=1, images="none"), labels=labels, instances=True
    )
    a = _tree(tmp_path / "a")
    assert "instances/one.png" in a and "images/one.png" not in a
    assert a == _tree(tmp_path / "b") == _tree(tmp_path / "c")


def test_bad_values_are_refused_when_the_spec_is_built():
    with pytest.raises(SegtoolError, match="--png-level 10 is not one of 0..9"):
        RasterizeSpec(png_level=10)
    with pytest.raises(SegtoolError, match="images"):
        RasterizeSpec(images="move")
    with pytest.raises(SegtoolError, match="pass one class table"):
        ImportSpec(values="255=a", colors=Path("c.txt"))
    with pytest.raises(SegtoolError, match="pass one class table"):
        ImportSpec(values="255=a", names=Path("names.txt"))
    with pytest.raises(SegtoolError, match="unknown"):
        ImportSpec(unknown="keep")
    with pytest.raises(dataclasses.FrozenInstanceError):
        RasterizeSpec().jobs = 2  # type: ignore[misc]


def test_an_unknown_option_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="labelz"):
        rasterize_dir(tmp_path, tmp_path / "out", labelz=tmp_path / "labels.txt")
    with pytest.raises(TypeError, match="colours"):
        import_masks(tmp_path, None, tmp_path / "out", colours=tmp_path / "c.txt")


def test_import_masks_takes_a_spec(tmp_path):
    pair(tmp_path / "src", "a", np.array([[0, 255], [255, 0]], np.uint8))
    spec = ImportSpec(values="255=membrane", jobs=1, image_mode="none")
    report = import_masks(tmp_path / "src", None, tmp_path / "out", spec)
    assert report.class_map.names == ("_background_", "membrane")
    assert not (tmp_path / "out" / "images").exists()


@pytest.mark.parametrize("function", [rasterize_dir, import_masks])
def test_at_most_eight_parameters(function):
    assert len(inspect.signature(function).parameters) <= 8
