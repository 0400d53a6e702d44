"""Pictures of what went wrong: the worst images side by side, and an index.html."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segtool.core.classes import ClassMap
from segtool.core.constants import MASK_SUFFIX
from segtool.core.images import list_images, load_rgb
from segtool.core.masks import read_mask
from segtool.core.multilabel import decode, preview
from segtool.evaluate.multilabel import BitReader

#: Error-map colours: true positive, false positive, false negative, ignored.
TP, FP, FN, IGNORED = (40, 180, 60), (220, 40, 40), (40, 90, 230), (90, 90, 90)
#: Largest panel side in pixels (bigger images are shrunk for the picture).
PANEL = 384


def image_score(row: dict) -> float:
    """An image's mean Dice over the foreground classes present in it (NaN if none)."""
    values = [v for v in row["dice"].values() if v is not None]
    return float(np.mean(values)) if values else math.nan


def error_map(reference: np.ndarray, prediction: np.ndarray, ignore_index: int) -> np.ndarray:
    """RGB: green where foreground is right, red where foreground is predicted wrongly,
    blue where reference foreground is missed, grey where ignored."""
    out = np.zeros((*reference.shape, 3), dtype=np.uint8)
    ignored = (reference == ignore_index) | (prediction == ignore_index)
    out[(reference == prediction) & (reference > 0)] = TP
    out[(prediction > 0) & (prediction != reference)] = FP
    out[(reference > 0) & (prediction == 0)] = FN
    out[ignored] = IGNORED
    return out


def class_error_maps(
    reference: np.ndarray, prediction: np.ndarray, class_map: ClassMap
) -> list[tuple[str, np.ndarray]]:
    """Multi-label masks (bit values): one error map per class present in either mask, each
    class its own binary problem (green TP, red FP, blue FN, grey where the reference
    ignores)."""
    k1 = class_map.num_foreground
    ref_planes, ignored = decode(reference, k1)
    pred_planes, pred_ignored = decode(prediction, k1)
    pred_planes &= ~pred_ignored  # a prediction's ignore bit predicts no class
    maps = []
    for c in range(k1):
        ref_c, pred_c = ref_planes[c] & ~ignored, pred_planes[c] & ~ignored
        if not (ref_c.any() or pred_c.any()):
            continue
        out = np.zeros((*reference.shape, 3), dtype=np.uint8)
        out[ref_c & pred_c] = TP
        out[pred_c & ~ref_c] = FP
        out[ref_c & ~pred_c] = FN
        out[ignored] = IGNORED
        maps.append((class_map.names[c + 1], out))
    return maps


def side_by_side(panels: list[Image.Image]) -> Image.Image:
    """One gallery sheet: the panels left to right on white, 4 px apart."""
    sheet = Image.new(
        "RGB",
        (sum(p.width for p in panels) + 4 * len(panels), max(p.height for p in panels)),
        (255, 255, 255),
    )
    x = 0
    for part in panels:
        sheet.paste(part, (x, 0))
        x += part.width + 4
    return sheet


def panel(array: np.ndarray, title: str) -> Image.Image:
    """One titled gallery panel of an image array, scaled down to the panel size."""
    img = Image.fromarray(array)
    scale = min(1.0, PANEL / max(img.size))
    if scale < 1:
        img = img.resize(
            (max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.NEAREST
        )
    framed = Image.new("RGB", (img.width, img.height + 16), (255, 255, 255))
    framed.paste(img, (0, 16))
    ImageDraw.Draw(framed).text((2, 2), title, fill=(0, 0, 0))
    return framed


def _images_by_stem(folder: Path | None) -> dict[str, Path]:
    """The images in `folder` by stem (the first by name where two share one); none if absent."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in list_images(folder):
        found.setdefault(path.stem, path)
    return found


def make_gallery(
    summary: dict,
    predictions: Path,
    references: Path,
    out: Path,
    class_map: ClassMap,
    n: int,
    images: Path | None = None,
    reader: BitReader | None = None,
) -> list[Path]:
    """Write PNGs for the `n` images with the lowest Dice (image, reference, prediction,
    error map) and an ``index.html`` showing them with their scores. Multi-label masks, read
    through `reader`, get blended-colour pictures and one error map per class.

    Returns:
        The PNGs written, worst first.
    """
    scored = [(image_score(row), row) for row in summary["per_image"]]
    # Ties (common for a weak model) are broken by image name; rows themselves never compare.
    kept = [(s, row) for s, row in scored if not math.isnan(s)]
    scored = sorted(kept, key=lambda item: (item[0], item[1]["image"]))[:n]
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    image_files = _images_by_stem(images)
    for score, row in scored:
        stem = row["image"]
        panels = []
        image_path = image_files.get(stem)
        if image_path is not None:
            panels.append(panel(load_rgb(image_path), "image"))
        if reader is not None:
            reference = reader.read(references / f"{stem}{MASK_SUFFIX}")
            prediction = reader.read(predictions / f"{stem}{MASK_SUFFIX}")
            k1, colors = class_map.num_foreground, class_map.colors
            panels += [
                panel(preview(reference, k1, colors), "reference"),
                panel(preview(prediction, k1, colors), "prediction"),
            ]
            panels += [
                panel(errors, f"{name}: errors")
                for name, errors in class_error_maps(reference, prediction, class_map)
            ]
        else:
            reference = read_mask(references / f"{stem}{MASK_SUFFIX}")
            prediction = read_mask(predictions / f"{stem}{MASK_SUFFIX}")
            panels += [
                panel(class_map.colorize(reference), "reference"),
                panel(class_map.colorize(prediction), "prediction"),
                panel(
                    error_map(reference, prediction, class_map.ignore_index),
                    "TP green / FP red / FN blue",
                ),
            ]
        sheet = side_by_side(panels)
        path = out / f"{stem}.png"
        sheet.save(path)
        written.append(path)
        per_class = ", ".join(
            f"{name} {value:.3f}" for name, value in row["dice"].items() if value is not None
        )
        rows.append(
            f"<tr><td>{html.escape(stem)}</td><td>{score:.3f}</td><td>{html.escape(per_class)}</td>"
            f'<td><img src="{html.escape(path.name)}"></td></tr>'
        )
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>segtool: lowest Dice</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}"
        "img{max-width:100%}</style>"
        f"<h1>The {len(rows)} images with the lowest mean Dice</h1>"
        "<p>Error map: green = foreground right, red = false positive, blue = false negative, "
        "grey = ignored.</p><table><tr><th>image</th><th>mean Dice</th><th>per class</th>"
        "<th></th></tr>" + "".join(rows) + "</table>\n"
    )
    return written
