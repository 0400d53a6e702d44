"""Ultralytics YOLO segmentation labels: masks identical to PIL's polygons of the
denormalised coordinates (labelme's fill rule, as every polygon format), through the command
line; data.yaml's names (list or dict) give the ids; every bad line refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from segtool.core.errors import SegtoolError
from segtool.sources.detect import detect
from segtool.sources.yolo import label_path, read_yolo
from tests.cli import invoke
from tests.conftest import read_png, write_image

NAMES = ["cat", "dog", "bird"]


def yolo_tree(root: Path, labels: dict[str, str], sizes: dict[str, tuple[int, int]],
              names_yaml: str | None = None) -> Path:  # fmt: skip
    """A dataset laid out as Ultralytics reads it: data.yaml, images/<x>, labels/<x>.txt."""
    for name, (width, height) in sizes.items():
        write_image(root / "images" / name, width, height)
    for name, text in labels.items():
        path = root / "labels" / Path(name).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if names_yaml is None:
        names_yaml = "names: [" + ", ".join(NAMES) + "]\n"
    (root / "data.yaml").write_text("path: /elsewhere/ds\ntrain: images/train\n" + names_yaml)
    return root


def reference(text: str, width: int, height: int) -> np.ndarray:
    """Each line, in order, as PIL's filled and outlined polygon of x * width, y * height in
    class index + 1: labelme's rule, which segtool applies to every polygon format."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for line in filter(str.strip, text.splitlines()):
        values = [float(v) for v in line.split()]
        xy = [(x * width, y * height) for x, y in zip(values[1::2], values[2::2], strict=True)]
        draw.polygon(xy, fill=int(values[0]) + 1, outline=int(values[0]) + 1)
    return np.asarray(canvas)


coordinate = st.floats(0, 1, allow_nan=False).map(lambda v: round(v, 6))
polygon_line = st.tuples(
    st.integers(0, len(NAMES) - 1),
    st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=8),
).map(lambda t: " ".join([str(t[0]), *(f"{x} {y}" for x, y in t[1])]))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(polygon_line, max_size=6),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    dict_names=st.booleans(),
)
def test_masks_match_pils_polygons_of_the_denormalised_points(
    tmp_path_factory, lines, width, height, dict_names
):
    root = tmp_path_factory.mktemp("yolo")
    text = "\n".join(lines) + "\n"
    names = (
        "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES)) if dict_names else None
    )
    yolo_tree(root / "ds", {"train/a.png": text}, {"train/a.png": (width, height)}, names)
    result = invoke(["rasterize", str(root / "ds"), str(root / "out"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        read_png(root / "out" / "masks" / "a.png"), reference(text, width, height)
    )
    classes = (root / "out" / "classes.json").read_text()
    assert all(f'"name": "{n}"' in classes for n in NAMES)  # every name, used or not, in order


def test_ids_follow_data_yaml_and_background_images_have_no_objects(tmp_path):
    ds = yolo_tree(
        tmp_path / "ds",
        {"train/a.jpg": "2 0 0 1 0 1 1 0 1\n", "val/b.png": "\n0 0.5 0 1 0 1 1\n"},
        {"train/a.jpg": (8, 6), "val/b.png": (10, 10), "val/c.png": (4, 4)},
    )
    result = invoke(["rasterize", str(ds / "data.yaml"), str(tmp_path / "out"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    a = read_png(tmp_path / "out" / "masks" / "a.png")
    assert set(np.unique(a)) == {3}  # bird: index 2 -> id 3, the whole image
    assert read_png(tmp_path / "out" / "masks" / "c.png").max() == 0
    assert (tmp_path / "out" / "images" / "b.png").is_file()


def test_the_layout(tmp_path):
    assert label_path(Path("ds/images/train/a.jpg")) == Path("ds/labels/train/a.txt")
    assert label_path(Path("images/x/images/a.jpg")) == Path("images/x/labels/a.txt")
    assert label_path(Path("ds/a.jpg")) is None
    yolo_tree(tmp_path, {}, {"a.png": (4, 4)})
    assert detect(tmp_path) == ("yolo", tmp_path)
    assert detect(tmp_path / "data.yaml") == ("yolo", tmp_path / "data.yaml")
    (record,) = read_yolo(tmp_path)
    assert record.classes == tuple(NAMES) and record.shapes == ()


BAD = {
    "coordinate above 1": ("0 0.1 0.1 1.2 0.1 0.5 0.5", "line 1: coordinate 1.2 lies outside 0..1"),
    "negative coordinate": ("0 0.1 -0.1 0.2 0.1 0.5 0.5", "coordinate -0.1 lies outside 0..1"),
    "nan coordinate": ("0 0.1 nan 0.2 0.1 0.5 0.5", "coordinate nan lies outside 0..1"),
    "unknown class": ("\n3 0.1 0.1 0.2 0.1 0.5 0.5", "line 2: class index 3 is not one of"),
    "negative class": ("-1 0.1 0.1 0.2 0.1 0.5 0.5", "class index -1 is not one of"),
    "fractional class": ("1.5 0.1 0.1 0.2 0.1 0.5 0.5", "class index 1.5 is not one of"),
    "odd count": ("0 0.1 0.1 0.2 0.1 0.5", "5 coordinates, an odd count"),
    "a box": ("0 0.5 0.5 0.2 0.2", "a detection box (x y w h), not a polygon"),
    "not numbers": ("0 0.1 0.1 0.2 zero 0.5 0.5", "is not numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_lines_are_one_line_exit_1_nothing_written(tmp_path, case):
    line, expected = BAD[case]
    ds = yolo_tree(tmp_path / "src", {"a.png": line + "\n"}, {"a.png": (8, 8)})
    result = invoke(["rasterize", str(ds), str(tmp_path / "ds"), "--jobs", "1"])
    assert result.exit_code == 1, result.output
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error:") and "Traceback" not in result.output
    assert "a.txt" in result.stderr and expected in result.stderr.replace("\n", " "), result.stderr
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds*"))


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ("names: {0: cat, 2: dog}\n", "a dict of names needs the class indices 0..1"),
        ("nc: 2\n", "no class names"),
        ("names: [cat, 3]\n", "class name 3 is not a name"),
        ("names: [cat\n", "cannot read it as YAML"),
    ],
)
def test_bad_data_yaml(tmp_path, names, expected):
    ds = yolo_tree(tmp_path / "src", {}, {"a.png": (4, 4)}, names)
    with pytest.raises(SegtoolError, match=expected):
        read_yolo(ds)
    result = invoke(["rasterize", str(ds), str(tmp_path / "ds"), "--jobs", "1"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "ds").exists()


def test_no_images_folder_is_named(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [cat]\n")
    write_image(tmp_path / "pics" / "a.png", 4, 4)
    with pytest.raises(SegtoolError, match="no images in an images/ folder"):
        read_yolo(tmp_path)
