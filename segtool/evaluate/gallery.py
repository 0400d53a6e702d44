"""Pictures of what went wrong: the worst images (or cases, on their most wrong slice) side by
side, and an index.html. The reader supplies each item's 2-D view."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segtool.core.classes import ClassMap
from segtool.core.legend import Entry, class_entries, present_ids, with_legend
from segtool.core.multilabel import decode, preview
from segtool.evaluate.readers import MaskReader, View

#: Error-map colours: true positive, false positive, false negative, ignored.
TP, FP, FN, IGNORED = (40, 180, 60), (220, 40, 40), (40, 90, 230), (90, 90, 90)
#: Largest panel side in pixels (bigger images are shrunk for the picture).
PANEL = 384


#: What the gallery ranks by: the per-image score and how the page names it.
RANKS = {"dice": "Dice", "lesion_dice": "lesion-wise Dice"}


def image_score(row: dict, metric: str = "dice") -> float:
    """An image's mean `metric` (Dice by default) over the foreground classes where it is
    defined (NaN if none)."""
    values = [v for v in row[metric].values() if v is not None]
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


def _panels(view: View, reader: MaskReader) -> list[Image.Image]:
    """The panels of one sheet: the image (when found), the reference, the prediction and the
    error map (bit sets: blended colours and one error map per class)."""
    class_map = reader.class_map
    panels = [] if view.image is None else [panel(view.image, "image")]
    if reader.multilabel:
        k1, colors = class_map.num_foreground, class_map.colors
        panels += [
            panel(preview(view.reference, k1, colors), "reference"),
            panel(preview(view.prediction, k1, colors), "prediction"),
        ]
        return panels + [
            panel(errors, f"{name}: errors")
            for name, errors in class_error_maps(view.reference, view.prediction, class_map)
        ]
    errors = error_map(view.reference, view.prediction, class_map.ignore_index)
    return [
        *panels,
        panel(class_map.colorize(view.reference), "reference"),
        panel(class_map.colorize(view.prediction), "prediction"),
        panel(errors, view.caption),
    ]


def _legend(view: View, reader: MaskReader) -> list[Entry]:
    """The sheet's legend: the classes in its reference and prediction, in their colours, then
    the error map's colours."""
    class_map = reader.class_map
    ids = present_ids(class_map, view.reference, view.prediction)
    errors = [("right", TP), ("false positive", FP), ("missed", FN), ("ignored", IGNORED)]
    return class_entries(class_map, ids) + errors


def make_gallery(
    summary: dict,
    files: dict[str, tuple[Path, Path]],
    out: Path,
    reader: MaskReader,
    n: int,
    images: Path | None = None,
    rank_by: str = "dice",
) -> list[Path]:
    """Write a PNG for each of the `n` images (or cases) with the lowest mean Dice, or
    lesion-wise Dice with `rank_by` ``lesion_dice`` (image,
    reference, prediction, error map of the reader's view: the image itself, or a volume's
    most wrong slice) and an ``index.html`` showing them with their scores.

    Args:
        summary: the summary document (its ``per_image`` rows).
        files: (prediction, reference) by stem or case.
        out: the gallery folder.
        reader: the reader of the masks (and so of their views).
        n: how many.
        images: where the images are (none drawn when absent).
        rank_by: the per-image score ranked by (`RANKS`).

    Returns:
        The PNGs written, worst first.
    """
    label = RANKS[rank_by]
    scored = [
        (image_score(row, rank_by), row) for row in summary["per_image"] if row["image"] in files
    ]
    # Ties (common for a weak model) are broken by name; rows themselves never compare.
    kept = [(s, row) for s, row in scored if not math.isnan(s)]
    scored = sorted(kept, key=lambda item: (item[0], item[1]["image"]))[:n]
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    image_files = reader.image_files(images)
    for score, row in scored:
        stem = row["image"]
        view = reader.view(*files[stem], image_files.get(stem))
        path = out / f"{stem}.png"
        with_legend(side_by_side(_panels(view, reader)), _legend(view, reader)).save(path)
        written.append(path)
        per_class = ", ".join(
            f"{name} {value:.3f}" for name, value in row[rank_by].items() if value is not None
        )
        where = "" if view.where is None else f"<td>{html.escape(view.where)}</td>"
        rows.append(
            f"<tr><td>{html.escape(stem)}</td><td>{score:.3f}</td><td>{html.escape(per_class)}</td>"
            f'{where}<td><img src="{html.escape(path.name)}"></td></tr>'
        )
    where_head = f"<th>{reader.where_label}</th>" if reader.where_label else ""
    (out / "index.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>segtool: lowest {label}</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}"
        "img{max-width:100%}</style>"
        f"<h1>The {len(rows)} {reader.item}s with the lowest mean {label}{reader.view_note}</h1>"
        "<p>Error map: green = foreground right, red = false positive, blue = false negative, "
        f"grey = ignored.</p><table><tr><th>{reader.item}</th><th>mean {label}</th>"
        f"<th>per class</th>{where_head}<th></th></tr>" + "".join(rows) + "</table>\n"
    )
    return written
