"""import-masks: binary, value tables, colour tables, palette PNGs, VOC and split-folder layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtool.core.errors import SegtoolError
from segtool.rasterize.import_masks import import_masks
from tests.conftest import write_image


def put_mask(path: Path, array: np.ndarray, *, mode: str | None = None, palette=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette is not None:
        img.putpalette(palette)
    img.save(path)
    return path


def pair(root: Path, stem: str, mask: np.ndarray, **kw) -> None:
    h, w = mask.shape[:2]
    write_image(root / "images" / f"{stem}.jpg", w, h)
    put_mask(root / "masks" / f"{stem}.png", mask, **kw)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def expected_ids(values: np.ndarray, table: dict) -> np.ndarray:
    """Pixel by pixel through a plain dict (the reference)."""
    out = np.zeros(values.shape[:2], np.uint16)
    for y in range(values.shape[0]):
        for x in range(values.shape[1]):
            key = tuple(int(v) for v in values[y, x]) if values.ndim == 3 else int(values[y, x])
            out[y, x] = table[key]
    return out


RNG = np.random.default_rng(3)


@pytest.mark.parametrize("high", [255, 1])
def test_binary_masks(tmp_path, high):
    masks = [(RNG.random((6, 7)) > 0.5).astype(np.uint8) * high for _ in range(3)]
    for i, m in enumerate(masks):
        pair(tmp_path / "src", f"m{i}", m)
    report = import_masks(
        tmp_path / "src" / "images", tmp_path / "src" / "masks", tmp_path / "out", jobs=1
    )
    assert report.class_map.names == ("_background_", "foreground")
    for i, m in enumerate(masks):
        np.testing.assert_array_equal(read(tmp_path / "out" / "masks" / f"m{i}.png"), m // high)
    doc = json.loads((tmp_path / "out" / "rasterize_report.json").read_text())
    assert doc["values"][str(high)]["pixels"] == sum(int((m == high).sum()) for m in masks)


def test_binary_foreground_named_by_values(tmp_path):
    pair(tmp_path / "src", "a", np.array([[0, 255]], np.uint8))
    report = import_masks(tmp_path / "src", None, tmp_path / "out", values="255=membrane", jobs=1)
    assert report.class_map.names == ("_background_", "membrane")


def test_value_table_with_ignore_and_16_bit(tmp_path):
    values = RNG.choice([0, 300, 7000, 65535], size=(5, 6)).astype(np.uint16)
    pair(tmp_path / "src", "a", values)
    report = import_masks(
        tmp_path / "src",
        None,
        tmp_path / "out",
        jobs=1,
        values="0=background,7000=car,300=road,65535=__ignore__",
    )
    assert report.class_map.names == ("_background_", "road", "car")  # value order
    table = {0: 0, 300: 1, 7000: 2, 65535: 255}
    np.testing.assert_array_equal(
        read(tmp_path / "out" / "masks" / "a.png"), expected_ids(values, table)
    )


def test_rgb_colour_table_keeps_colours(tmp_path):
    colors = tmp_path / "label_colors.txt"
    colors.write_text("0 0 0\tVoid\n128 64 128 Road\n# a comment\n64 0 128\tCar\n")
    palette = np.array([[0, 0, 0], [128, 64, 128], [64, 0, 128]], np.uint8)
    rgb = palette[RNG.integers(0, 3, (5, 6))]
    pair(tmp_path / "src", "a", rgb)
    report = import_masks(tmp_path / "src", None, tmp_path / "out", colors=colors, jobs=1)
    # the table names no background: none is invented, Void is id 0 and scored (CamVid style)
    assert report.class_map.names == ("Void", "Road", "Car")
    assert report.class_map.background_scored
    table = {(0, 0, 0): 0, (128, 64, 128): 1, (64, 0, 128): 2}
    np.testing.assert_array_equal(
        read(tmp_path / "out" / "masks" / "a.png"), expected_ids(rgb, table)
    )
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert classes["classes"][1]["color"] == [128, 64, 128]
    assert classes["background_scored"] is True


def test_voc_layout_palette_indices_and_official_split(tmp_path):
    root = tmp_path / "VOC2012"
    palette = list(range(256)) * 3
    for stem, split in (("2007_000032", "train"), ("2007_000033", "val"), ("2007_000039", "train")):
        m = RNG.choice([0, 1, 15, 255], size=(8, 9)).astype(np.uint8)
        write_image(root / "JPEGImages" / f"{stem}.jpg", 9, 8)
        put_mask(root / "SegmentationClass" / f"{stem}.png", m, mode="P", palette=palette)
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        with open(lists / f"{split}.txt", "a") as fh:
            fh.write(stem + "\n")
    write_image(root / "JPEGImages" / "2007_000040.jpg", 9, 8)  # no mask: not part of the set
    report = import_masks(root, None, tmp_path / "out", jobs=1)
    assert report.class_map.names[15] == "person" and len(report.class_map.names) == 21
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["train"] == ["2007_000032", "2007_000039"] and split["val"] == ["2007_000033"]
    m = read(root / "SegmentationClass" / "2007_000033.png")
    np.testing.assert_array_equal(read(tmp_path / "out" / "masks" / "2007_000033.png"), m)


def test_camvid_split_folders(tmp_path):
    root = tmp_path / "CamVid"
    for split, stems in (("train", ["a", "b"]), ("val", ["c"]), ("test", ["d"])):
        for stem in stems:
            write_image(root / split / f"{stem}.png", 4, 3)
            put_mask(root / f"{split}annot" / f"{stem}.png", np.array([[0, 1, 2, 1]] * 3, np.uint8))
    import_masks(root, None, tmp_path / "out", values="0=sky,1=road,2=car", jobs=1)
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert (split["train"], split["val"], split["test"]) == (["a", "b"], ["c"], ["d"])
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
    ]


# --- bad inputs: a clear line naming the file, nothing written ------------------------------


def test_mask_size_differs_from_image(tmp_path):
    write_image(tmp_path / "src" / "images" / "a.jpg", 5, 4)
    put_mask(tmp_path / "src" / "masks" / "a.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(
        SegtoolError, match=r"a.png: 6 x 4 \(width x height\) but its image .*a.jpg is 5 x 4"
    ):
        import_masks(tmp_path / "src", None, tmp_path / "out", jobs=1)
    assert not (tmp_path / "out").exists()


def test_rgb_colour_not_in_table(tmp_path):
    colors = tmp_path / "colors.txt"
    colors.write_text("0 0 0 void\n255 0 0 car\n")
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[0, :2] = (0, 255, 0)
    pair(tmp_path / "src", "a", rgb)
    with pytest.raises(
        SegtoolError, match=r"a.png: colour \(0, 255, 0\) \(2 px\) is not in the table"
    ):
        import_masks(tmp_path / "src", None, tmp_path / "out", colors=colors, jobs=1)
    assert not (tmp_path / "out").exists()


def test_16_bit_unmapped_values_are_errors_or_ignore(tmp_path):
    values = np.array([[0, 1, 1000, 1000]], np.uint16)
    pair(tmp_path / "src", "a", values)
    with pytest.raises(
        SegtoolError, match=r"a.png: value 1000 \(2 px\) is not in the table.*--unknown ignore"
    ):
        import_masks(tmp_path / "src", None, tmp_path / "out", values="0=background,1=cell", jobs=1)
    assert not (tmp_path / "out").exists()
    import_masks(
        tmp_path / "src",
        None,
        tmp_path / "out",
        values="0=background,1=cell",
        unknown="ignore",
        jobs=1,
    )
    assert read(tmp_path / "out" / "masks" / "a.png").tolist() == [[0, 1, 255, 255]]


def test_values_beyond_binary_need_a_table(tmp_path):
    pair(tmp_path / "src", "a", np.array([[0, 1, 2]], np.uint8))
    with pytest.raises(
        SegtoolError, match=r"values 0, 1, 2, not just 0/255 or 0/1; name each value"
    ):
        import_masks(tmp_path / "src", None, tmp_path / "out", jobs=1)


def test_output_inside_an_input_is_refused(tmp_path):
    pair(tmp_path / "src", "a", np.array([[0, 255]], np.uint8))
    with pytest.raises(SegtoolError, match="lies inside the image folder"):
        import_masks(tmp_path / "src", None, tmp_path / "src" / "out", jobs=1)


def test_output_holding_an_input_is_refused_even_with_overwrite(tmp_path):
    """OUT above the image folder would be replaced whole: the folder it holds is named."""
    pair(tmp_path / "data" / "src", "a", np.array([[0, 255]], np.uint8))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(SegtoolError, match=r"contains the image folder"):
        import_masks(tmp_path / "data" / "src", None, tmp_path / "data", overwrite=True, jobs=1)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- the command ----------------------------------------------------------------------------


def test_command_imports_and_prints_the_values(tmp_path):

    from tests.cli import invoke

    pair(tmp_path / "src", "a", np.array([[0, 255, 255]], np.uint8))
    src = tmp_path / "src"
    result = invoke(
        ["import-masks", str(src / "images"), str(src / "masks"), str(tmp_path / "ds"), "-j", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "class map: 0=_background_, 1=foreground" in result.stderr
    assert "255" in result.stdout and "1 masks written" in result.stdout


def test_command_refuses_a_bad_mask_with_one_line(tmp_path):

    from tests.cli import invoke

    write_image(tmp_path / "src" / "images" / "a.jpg", 5, 4)
    put_mask(tmp_path / "src" / "masks" / "a.png", np.zeros((3, 5), np.uint8))
    result = invoke(["import-masks", str(tmp_path / "src"), str(tmp_path / "ds")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "a.png: 5 x 3" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_values_and_colors_together_are_a_usage_error(tmp_path):
    from tests.cli import invoke

    write_image(tmp_path / "src" / "images" / "a.jpg", 5, 4)
    put_mask(tmp_path / "src" / "masks" / "a.png", np.zeros((4, 5), np.uint8))
    args = ["import-masks", tmp_path / "src", tmp_path / "ds", "--values", "0=_background_"]
    result = invoke([*args, "--colors", tmp_path / "colors.txt"])
    assert result.exit_code == 2 and "--colors: not allowed with --values" in result.stderr
    assert not (tmp_path / "ds").exists()


def test_a_mask_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 1-bit PNG of a few bytes can claim 160,000 pixels (400 M in the wild)."""
    from segtool.core.limits import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    write_image(tmp_path / "src" / "images" / "a.jpg", 5, 4)
    put_mask(tmp_path / "src" / "masks" / "a.png", np.zeros((400, 400), bool), mode="1")
    with pytest.raises(SegtoolError, match=r"masks/a.png: .*(over the limit|exceeds limit)"):
        import_masks(tmp_path / "src", None, tmp_path / "out", jobs=1)
    assert not (tmp_path / "out").exists()


def test_a_voc_image_list_that_is_not_text_is_named(tmp_path):
    root = tmp_path / "VOC2012"
    write_image(root / "JPEGImages" / "a.jpg", 9, 8)
    put_mask(root / "SegmentationClass" / "a.png", np.zeros((8, 9), np.uint8))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(SegtoolError, match=r"Segmentation/train.txt: not a readable list"):
        import_masks(root, None, tmp_path / "out", jobs=1)


def test_a_colour_table_with_a_byte_order_mark_is_read(tmp_path):
    colors = tmp_path / "label_colors.txt"
    colors.write_bytes(b"\xef\xbb\xbf0 0 0 Void\r\n128 64 128 Road\r\n")
    rgb = np.array([[[0, 0, 0], [128, 64, 128]]], np.uint8)
    pair(tmp_path / "src", "a", rgb)
    report = import_masks(tmp_path / "src", None, tmp_path / "out", colors=colors, jobs=1)
    assert report.class_map.names == ("Void", "Road")


def test_a_colour_table_nested_too_deeply_is_named(tmp_path):
    colors = tmp_path / "classes.json"
    colors.write_text("[" * 100_000 + "]" * 100_000)
    pair(tmp_path / "src", "a", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(SegtoolError, match=r"classes.json: not a classes.json with a color"):
        import_masks(tmp_path / "src", None, tmp_path / "out", colors=colors, jobs=1)
