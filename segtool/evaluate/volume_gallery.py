"""Pictures of what went wrong on volumes: for the worst cases, their most wrong slice.

A case's most wrong slice is the axial slice (from the reference's affine) with the most
voxels where prediction and reference disagree (the reference's ignore voxels left out). Each
sheet shows the image's first channel there (when the images are found), the reference, the
prediction and the error map, as the image gallery does; ``index.html`` lists them.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from segtool.core.classes import ClassMap
from segtool.evaluate.gallery import error_map, image_score, panel, side_by_side
from segtool.sources.nifti import read_geometry, read_label
from segtool.train.volumes import slice_axis, to_slices


def most_wrong_slice(reference: np.ndarray, prediction: np.ndarray, axis: int, ignore: int) -> int:
    """The index along `axis` of the slice with the most disagreeing voxels."""
    wrong = (reference != prediction) & (reference != ignore)
    other = tuple(a for a in range(reference.ndim) if a != axis)
    return int(np.argmax(wrong.sum(axis=other)))


def _grey(image_path: Path, axis: int, index: int) -> np.ndarray:
    """The first channel's slice, scaled to 0..255 between its 1st and 99th percentiles."""
    import nibabel as nib

    data = nib.load(str(image_path)).dataobj
    volume = np.asarray(data[..., 0] if len(data.shape) == 4 else data, dtype=np.float32)
    plane = np.take(volume, index, axis=axis)
    low, high = np.percentile(plane, [1, 99])
    scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _image_file(images: Path | None, case: str) -> Path | None:
    if images is None:
        return None
    for name in (f"{case}.nii.gz", f"{case}_0000.nii.gz", f"{case}.nii", f"{case}_0000.nii"):
        if (images / name).is_file():
            return images / name
    return None


def make_volume_gallery(
    summary: dict,
    predictions: Path,
    references: Path,
    out: Path,
    class_map: ClassMap,
    n: int,
    images: Path | None = None,
) -> list[Path]:
    """Write a PNG for each of the `n` cases with the lowest mean Dice (image, reference,
    prediction, error map on its most wrong slice) and an ``index.html``.

    Returns:
        The PNGs written, worst first.
    """
    scored = [(image_score(row), row) for row in summary["per_image"]]
    scored = sorted((s, row) for s, row in scored if not math.isnan(s))[:n]
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for score, row in scored:
        case = row["image"]
        ref_path = references / f"{case}.nii.gz"
        reference = read_label(ref_path, class_map)
        prediction = read_label(predictions / f"{case}.nii.gz", class_map)
        axis = slice_axis(read_geometry(ref_path)[2], "axial")
        index = most_wrong_slice(reference, prediction, axis, class_map.ignore_index)
        ref_slice = np.rot90(to_slices(reference, axis)[index])
        pred_slice = np.rot90(to_slices(prediction, axis)[index])
        panels = []
        image_path = _image_file(images, case)
        if image_path is not None:
            panels.append(panel(np.rot90(_grey(image_path, axis, index)).copy(), "image"))
        panels += [
            panel(class_map.colorize(ref_slice.copy()), "reference"),
            panel(class_map.colorize(pred_slice.copy()), "prediction"),
            panel(error_map(ref_slice, pred_slice, class_map.ignore_index), f"slice {index}"),
        ]
        sheet = side_by_side(panels)
        path = out / f"{case}.png"
        sheet.save(path)
        written.append(path)
        rows.append(
            f"<tr><td>{html.escape(case)}</td><td>{score:.3f}</td><td>{index}</td>"
            f'<td><img src="{html.escape(path.name)}"></td></tr>'
        )
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>segtool: lowest Dice cases</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}</style>"
        f"<h1>The {len(rows)} cases with the lowest mean Dice, each on its most wrong slice</h1>"
        "<p>Error map: green = foreground right, red = false positive, blue = false negative, "
        "grey = ignored.</p><table><tr><th>case</th><th>mean Dice</th><th>axial slice</th>"
        "<th></th></tr>" + "".join(rows) + "</table>\n"
    )
    return written
