"""A folder of labelme files -> a dataset folder (images/, masks/, classes.json, report).

Every file is checked before anything is written; the dataset is built beside its target
and swapped in when complete.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from segtool.core.classes import ClassMap, derive_class_map, read_class_map
from segtool.core.constants import (
    CLASSES_FILE,
    IGNORE_LABEL,
    IMAGES_DIR,
    MASK_SUFFIX,
    MASKS_DIR,
    REPORT_FILE,
)
from segtool.core.dataset import index_by_stem
from segtool.core.errors import InvalidInputError, SegtoolError, check_choice
from segtool.core.files import check_overwrite, output_folder, write_json
from segtool.core.masks import write_mask
from segtool.core.parallel import ProgressFn, default_jobs, imap_jobs, with_progress
from segtool.rasterize.draw import draw_shapes
from segtool.sources.labelme import LabelmeFile, parse_labelme, resolve_image
from segtool.sources.shapes import AnnotationError, ImageSource

#: How the original images reach ``dataset/images``.
IMAGE_MODES = ("copy", "link", "none")


def _label_problem(labels: set[str], known: frozenset[str]) -> str | None:
    missing = sorted(labels - known - {IGNORE_LABEL})
    if not missing:
        return None
    others = f" (nor {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""
    return (
        f"label {missing[0]!r} is not in the class map{others}; add it to the labels file "
        f"or fix the shape's label"
    )


def _load_checked(path: Path, class_map: ClassMap | None) -> tuple[LabelmeFile, ImageSource]:
    """Parse a labelme file, find its image, and check its labels against `class_map`.

    Raises:
        AnnotationError: whatever is wrong, without the file name.
    """
    ann = parse_labelme(path)
    source = resolve_image(ann)
    if class_map is not None:
        problem = _label_problem(ann.labels, frozenset(class_map.names))
        if problem:
            raise AnnotationError(problem)
    return ann, source


def rasterize_file(path: Path, class_map: ClassMap) -> np.ndarray:
    """The label mask of one labelme file, as labelme's export would write it.

    Raises:
        SegtoolError: the file or its image is invalid, or a label is not in the class map.
    """
    try:
        ann, source = _load_checked(path, class_map)
    except AnnotationError as exc:
        raise SegtoolError(f"{path}: {exc}") from exc
    values = class_map.value_of()
    return draw_shapes(ann.shapes, source.height, source.width, values, wide=class_map.sixteen_bit)


@dataclass
class FileResult:
    """What one worker learned about (and did with) one annotation file."""

    path: Path
    problem: str | None = None
    labels: list[str] = field(default_factory=list)
    pixels: dict[int, int] = field(default_factory=dict)
    shapes: Counter = field(default_factory=Counter)
    outside: int = 0
    warnings: list[str] = field(default_factory=list)


def process_file(
    path: Path, class_map: ClassMap | None, out: Path | None, images: str = "copy"
) -> FileResult:
    """Check one annotation file against `class_map` and, given `out`, write its mask and image.

    Never raises for a bad file: the problem comes back as ``FileResult.problem``.
    """
    try:
        ann, source = _load_checked(path, class_map)
    except AnnotationError as exc:
        return FileResult(path, problem=f"{path}: {exc}")
    result = FileResult(path, labels=sorted(ann.labels))
    if out is None or class_map is None:
        return result
    mask = draw_shapes(
        ann.shapes, source.height, source.width, class_map.value_of(), wide=class_map.sixteen_bit
    )
    # `out` is a temporary folder renamed into place when complete: no per-file rename needed.
    write_mask(out / MASKS_DIR / f"{path.stem}{MASK_SUFFIX}", mask, class_map, atomic=False)
    if images != "none":
        result.warnings += _place_image(
            source, out / IMAGES_DIR / f"{path.stem}{source.suffix}", images
        )
    counts = np.bincount(mask.ravel()) if class_map.sixteen_bit else _histogram_u8(mask)
    result.pixels = {int(v): int(n) for v, n in enumerate(counts) if n}
    result.shapes = Counter(s.label for s in ann.shapes)
    result.outside = sum(not s.inside(source.width, source.height) for s in ann.shapes)
    return result


def _histogram_u8(mask: np.ndarray) -> list[int]:
    # PIL's C histogram is several times faster than np.bincount on a full image.
    return Image.fromarray(mask).histogram()


def _place_image(source: ImageSource, target: Path, images: str) -> list[str]:
    """Copy or hard-link the original image bytes (or write the embedded ones) to `target`."""
    if source.file is None:
        target.write_bytes(source.data or b"")
    elif images == "link":
        try:
            os.link(source.file, target)
        except OSError:
            shutil.copyfile(source.file, target)
            return [f"{source.file}: cannot hard-link (another file system?); copied instead"]
    else:
        shutil.copyfile(source.file, target)
    return []


@dataclass
class RasterizeReport:
    """What `rasterize_dir` did: the class map, per-class counts, skipped files, warnings."""

    out: Path
    class_map: ClassMap
    class_map_source: str
    n_images: int = 0
    shapes: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``rasterize_report.json`` document."""
        total = sum(self.pixels.values()) or 1
        names = self.class_map.names
        return {
            "n_images": self.n_images,
            "class_map_source": self.class_map_source,
            "classes": {
                name: {
                    "id": i,
                    "shapes": int(self.shapes.get(name, 0)),
                    "pixels": int(self.pixels.get(i, 0)),
                    "pixel_share": self.pixels.get(i, 0) / total,
                }
                for i, name in enumerate(names)
            },
            "ignore": {
                "value": self.class_map.ignore_index,
                "shapes": int(self.shapes.get(IGNORE_LABEL, 0)),
                "pixels": int(self.pixels.get(self.class_map.ignore_index, 0)),
            },
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def find_annotations(root: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every ``*.json`` under `root` (recursively, sorted), leaving out the folders `exclude`.

    Raises:
        SegtoolError: `root` is missing, holds no JSON, or two files share a stem.
    """
    if not root.is_dir():
        raise SegtoolError(f"{root}: not a folder; pass the folder of labelme JSON files")
    skip = [p.resolve() for p in exclude]
    files = sorted(
        p
        for p in root.rglob("*.json")
        if p.is_file() and not any(p.resolve().is_relative_to(s) for s in skip)
    )
    if not files:
        raise SegtoolError(f"{root}: no *.json annotation files found; point at labelme's folder")
    index_by_stem(files, "masks are named by file stem")
    return files


def _run(
    paths: list[Path],
    class_map: ClassMap | None,
    tmp: Path | None,
    images: str,
    jobs: int,
    phase: str,
    on_progress: ProgressFn | None,
) -> list[FileResult]:
    """`process_file` over `paths` in `jobs` processes, reporting progress as `phase`."""
    work = partial(process_file, class_map=class_map, out=tmp, images=images)
    return list(with_progress(imap_jobs(work, paths, jobs), phase, len(paths), on_progress))


def _refuse_invalid(
    results: list[FileResult], total: int, annotations: Path, skip_invalid: bool
) -> None:
    """Raise when a file is invalid (unless `skip_invalid`) or when no valid file is left."""
    bad = [r.problem for r in results if r.problem]
    if bad and not skip_invalid:
        raise InvalidInputError(
            f"{len(bad)} of {total} annotation files are invalid, nothing was written "
            f"(fix them or pass --skip-invalid)",
            bad,
        )
    if len(bad) == len(results):
        raise SegtoolError(f"{annotations}: no valid annotation file left to convert")


def _make_report(
    results: list[FileResult], out: Path, class_map: ClassMap, source: str
) -> RasterizeReport:
    """Add up what the workers found: counts per class, skipped files, warnings."""
    report = RasterizeReport(out=out, class_map=class_map, class_map_source=source)
    outside = Counter()
    for result in results:
        if result.problem:
            report.skipped.append({"file": str(result.path), "reason": result.problem})
            continue
        report.n_images += 1
        report.shapes.update(result.shapes)
        report.pixels.update(result.pixels)
        report.warnings.extend(result.warnings)
        if result.outside:
            outside[result.path.stem] = result.outside
    if outside:
        report.warnings.append(
            f"{sum(outside.values())} shape(s) in {len(outside)} file(s) reach outside their "
            f"image and were clipped to it (as labelme does): "
            + ", ".join(f"{stem} ({n})" for stem, n in sorted(outside.items())[:5])
            + (", ..." if len(outside) > 5 else "")
        )
    return report


def rasterize_dir(
    annotations: Path,
    out: Path,
    *,
    labels: Path | None = None,
    images: str = "copy",
    jobs: int | None = None,
    skip_invalid: bool = False,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> RasterizeReport:
    """Turn a folder of labelme JSON files into a dataset folder (docs/architecture.md).

    Every file is checked before anything is written; the dataset is built in a temporary
    folder beside `out` and renamed into place only when complete.

    Args:
        annotations: folder searched recursively for ``*.json``.
        out: the dataset folder to write.
        labels: a labelme ``labels.txt`` or a ``classes.json``; None derives the map from the
            annotations (background 0, then labels sorted by name).
        images: ``copy``, ``link`` (hard link) or ``none``.
        jobs: worker processes; None uses every core.
        skip_invalid: convert the valid files and list the others in the report, instead of
            failing.
        overwrite: replace `out` if it exists.
        on_progress: called as ``(phase, done, total)`` after each file.

    Returns:
        The report, also written as ``rasterize_report.json``.

    Raises:
        SegtoolError: bad options, an existing `out`, or (without `skip_invalid`) any invalid file.
    """
    check_choice("images", images, IMAGE_MODES)
    check_overwrite(out, overwrite)
    class_map = read_class_map(labels) if labels is not None else None
    files = find_annotations(annotations, exclude=[out])
    jobs = jobs or default_jobs()
    source = str(labels) if labels is not None else "derived from the annotations"
    run = partial(_run, images=images, jobs=jobs, on_progress=on_progress)
    with output_folder(out, overwrite) as tmp:
        (tmp / MASKS_DIR).mkdir()
        if images != "none":
            (tmp / IMAGES_DIR).mkdir()
        if class_map is None:
            # The ids depend on every label, so all files are read before any is drawn.
            checks = run(files, None, None, phase="check")
            _refuse_invalid(checks, len(files), annotations, skip_invalid)
            class_map = derive_class_map(label for c in checks for label in c.labels)
            valid = [c.path for c in checks if not c.problem]
            results = [c for c in checks if c.problem]
            results += run(valid, class_map, tmp, phase="rasterize")
        else:
            # One pass checks and draws; the temporary folder is dropped if any file is bad.
            results = run(files, class_map, tmp, phase="rasterize")
            _refuse_invalid(results, len(files), annotations, skip_invalid)
        report = _make_report(results, out, class_map, source)
        class_map.save(tmp / CLASSES_FILE)
        write_json(tmp / REPORT_FILE, report.to_json())
    return report
