"""A folder of labelme files -> a dataset folder (images/, masks/, classes.json, report).

Every file is checked before anything is written; the dataset is built beside its target
and swapped in when complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core import png
from segtool.core.classes import (
    ClassMap,
    as_multilabel,
    derive_class_map,
    read_class_map,
)
from segtool.core.constants import (
    CLASSES_FILE,
    IGNORE_LABEL,
    IMAGES_DIR,
    MASK_SUFFIX,
    MASKS_DIR,
    REPORT_FILE,
    SPLIT_FILE,
)
from segtool.core.dataset import index_by_stem, is_hidden
from segtool.core.errors import InvalidInputError, SegtoolError, check_choice
from segtool.core.files import check_output, checked_first, output_folder, write_json
from segtool.core.parallel import ProgressFn, Workers, with_progress
from segtool.rasterize.draw import (
    draw_instances,
    draw_multilabel,
    draw_shapes,
)
from segtool.rasterize.exports import declared_class_map, process_record, read_export
from segtool.rasterize.instances import INSTANCES_DIR, write_instances
from segtool.rasterize.report import RasterizeReport, Tally, make_report
from segtool.rasterize.result import (
    PREVIEWS_DIR,
    FileResult,
    label_problem,
    place_image,
    write_exclusive,
    write_multilabel,
)
from segtool.rasterize.spec import RasterizeSpec, spec_of
from segtool.sources.detect import FORMATS, SPLIT_FOLDERS, detect, split_exports
from segtool.sources.labelme import LabelmeFile, parse_labelme, resolve_image
from segtool.sources.shapes import AnnotationError, ImageSource, far_shape

if TYPE_CHECKING:
    import numpy as np

#: Fewer files (without --jobs) are drawn in this process: workers would cost more than they save.
MIN_FILES_FOR_WORKERS = 16


def _load_checked(path: Path, class_map: ClassMap | None) -> tuple[LabelmeFile, ImageSource]:
    """Parse a labelme file, find its image, and check its labels against `class_map`.

    Raises:
        AnnotationError: whatever is wrong, without the file name.
    """
    ann = parse_labelme(path)
    source = resolve_image(ann)
    far = far_shape(ann.shapes, source.width, source.height)
    if far:
        raise AnnotationError(far)
    if class_map is not None:
        problem = label_problem(ann.labels, frozenset(class_map.names))
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
    return _draw(ann.shapes, source.height, source.width, class_map)


def _draw(shapes, height: int, width: int, class_map: ClassMap) -> np.ndarray:
    """Class ids (exclusive map) or bit values (multi-label map) of one image."""
    if class_map.multilabel:
        ids = {name: i for i, name in enumerate(class_map.names)}
        return draw_multilabel(shapes, height, width, ids, class_map.num_foreground)
    values = class_map.value_of()
    return draw_shapes(shapes, height, width, values, wide=class_map.sixteen_bit)


def process_file(
    path: Path,
    class_map: ClassMap | None,
    out: Path | None,
    images: str = "copy",
    instances: bool = False,
    previews: bool = False,
    level: int = png.DEFAULT_LEVEL,
) -> FileResult:
    """Check one annotation file against `class_map` and, given `out`, write its mask and image
    (and, when asked, its instance mask and colour preview).

    Never raises for a bad file: the problem comes back as ``FileResult.problem``.
    """
    try:
        ann, source = _load_checked(path, class_map)
    except AnnotationError as exc:
        return FileResult(path, problem=f"{path}: {exc}")
    result = FileResult(path, labels=sorted(ann.labels), image=source.file)
    if out is None or class_map is None:
        return result
    if instances:
        try:
            ids, objects = draw_instances(ann.shapes, source.height, source.width)
        except ValueError as exc:
            return FileResult(path, problem=f"{path}: {exc}; split the image's annotations")
        write_instances(out / INSTANCES_DIR / f"{path.stem}{MASK_SUFFIX}", ids)
        result.objects = Counter(label for label, _ in objects if label != IGNORE_LABEL)
    # `out` is a temporary folder renamed into place when complete: no per-file rename needed.
    target = out / MASKS_DIR / f"{path.stem}{MASK_SUFFIX}"
    if class_map.multilabel:
        result.pixels = write_multilabel(ann.shapes, source, class_map, out, path.stem, previews)
    else:
        result.pixels = write_exclusive(ann.shapes, source, class_map, target, level)
    if images != "none":
        result.warnings += place_image(
            source, out / IMAGES_DIR / f"{path.stem}{source.suffix}", images
        )
    result.shapes = Counter(s.label for s in ann.shapes)
    result.outside = sum(not s.inside(source.width, source.height) for s in ann.shapes)
    return result


def find_annotations(
    root: Path, exclude: Iterable[Path] = (), on_found: Callable[[int], None] | None = None
) -> list[Path]:
    """Every ``*.json`` under `root` (recursively, sorted), leaving out the folders `exclude`.

    Args:
        root: the folder to search.
        exclude: folders whose files are left out (the output, when it lies inside `root`).
        on_found: called with the number of files found so far, as they are found.

    Raises:
        SegtoolError: `root` is missing, holds no JSON, or two files share a stem.
    """
    if not root.is_dir():
        raise SegtoolError(f"{root}: not a folder; pass the folder of labelme JSON files")
    skip = [p.resolve() for p in exclude]
    files = []
    for p in root.rglob("*.json"):
        hidden = is_hidden(p) or any(is_hidden(d) for d in p.relative_to(root).parents if d.name)
        if p.is_file() and not hidden and not any(p.resolve().is_relative_to(s) for s in skip):
            files.append(p)
            if on_found:
                on_found(len(files))
    files.sort()
    if not files:
        raise SegtoolError(f"{root}: no *.json annotation files found; point at labelme's folder")
    index_by_stem(files, "masks are named by file stem")
    return files


def _run(
    paths: list,
    class_map: ClassMap | None,
    tmp: Path | None,
    images: str,
    workers: Workers,
    phase: str,
    on_progress: ProgressFn | None,
    **outputs: bool | int,
) -> Tally:
    """`process_file` (for an export's image records, `process_record`) over `paths` on
    `workers`, reporting progress as `phase`, each record added up as it arrives; `outputs`
    are `process_file`'s optional outputs (instances, previews) and the PNG level."""
    process = process_file if not paths or isinstance(paths[0], Path) else process_record
    work = partial(process, class_map=class_map, out=tmp, images=images, **outputs)
    tally = Tally()
    for result in with_progress(workers.imap(work, paths), phase, len(paths), on_progress):
        tally.add(result)
    return tally


def _refuse_invalid(
    tally: Tally, total: int, annotations: Path, skip_invalid: bool, what: str
) -> None:
    """Raise when a file is invalid (unless `skip_invalid`) or when no valid file is left."""
    bad = [r.problem for r in tally.bad]
    if bad and not skip_invalid:
        raise InvalidInputError(
            f"{len(bad)} of {total} {what} are invalid, nothing was written "
            f"(fix them or pass --skip-invalid)",
            bad,
        )
    if len(bad) == tally.total:
        raise SegtoolError(f"{annotations}: no valid annotation file left to convert")


#: Options only some sources read: given for another, they would be silently ignored.
SOURCE_OPTIONS = {
    "--image-dir": ("coco", "cvat", "via", "labelstudio"),
    "--via-attribute": ("via",),
    "--crowd": ("coco",),
}


def _check_source_options(annotations: Path, format: str, spec: RasterizeSpec) -> None:
    """Refuse an option the source's format does not read (it would be silently ignored)."""
    given = {
        "--image-dir": spec.image_dir is not None,
        "--via-attribute": spec.via_attribute is not None,
        "--crowd": spec.crowd != "ignore",
    }
    for option, formats in SOURCE_OPTIONS.items():
        if given[option] and format not in formats:
            raise SegtoolError(
                f"{annotations}: a {format} source does not use {option} (it is for "
                f"{', '.join(formats)}); drop it"
            )


def _sources(
    annotations: Path, out: Path, spec: RasterizeSpec, workers: Workers
) -> tuple[list, dict[str, str] | None]:
    """The labelme files, or the export's image records, that `rasterize_dir` converts; with
    one export per split folder (`split_exports`), every split's records and the split of
    each mask (else None)."""
    format = spec.format
    check_choice("format", format, ("auto", *FORMATS))
    per_split = split_exports(annotations) if format == "auto" else None
    if per_split is not None:
        return _split_records(annotations, *per_split, spec)
    if format == "auto":
        format, annotations = detect(annotations)
    _check_source_options(annotations, format, spec)
    if format == "labelme":
        return find_annotations(annotations, exclude=[out], on_found=workers.found), None
    records = read_export(
        format, annotations, spec.image_dir, via_attribute=spec.via_attribute, crowd=spec.crowd
    )
    if not records:
        raise SegtoolError(f"{annotations}: the {format} file lists no images")
    return records, None


def _split_records(
    root: Path, format: str, files: dict[str, Path], spec: RasterizeSpec
) -> tuple[list, dict[str, str]]:
    """The records of one export per split (each finding its images beside it, or in
    --image-dir), and the split of each mask; a mask name in two splits is refused."""
    _check_source_options(root, format, spec)
    records, split_of, first = [], {}, {}
    for split, path in files.items():
        for record in read_export(
            format, path, spec.image_dir, via_attribute=spec.via_attribute, crowd=spec.crowd
        ):
            if record.stem in split_of and record.problem is None:
                raise SegtoolError(
                    f"{path}: image {record.name!r} has the mask name of one in "
                    f"{first[record.stem]} ({split_of[record.stem]} split); masks are named "
                    f"by image stem, so rename one"
                )
            split_of[record.stem], first[record.stem] = split, path
            records.append(record)
    if not records:
        raise SegtoolError(f"{root}: the {format} files of the split folders list no images")
    return records, split_of


def _write_split(tmp: Path, split_of: dict[str, str], root: Path) -> dict[str, int]:
    """split.json of the masks written, each in the split of the export file it came from;
    returns the images per split."""
    written = sorted(p.stem for p in (tmp / MASKS_DIR).iterdir())
    doc: dict = {"seed": None, "source": f"official split: one export per split folder of {root}"}
    for split in SPLIT_FOLDERS:
        doc[split] = [stem for stem in written if split_of.get(stem) == split]
    write_json(tmp / SPLIT_FILE, doc)
    return {split: len(doc[split]) for split in SPLIT_FOLDERS}


def rasterize_dir(
    annotations: Path,
    out: Path,
    spec: RasterizeSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> RasterizeReport:
    """Turn annotations (a labelme folder or an export file) into a dataset folder
    (docs/architecture.md).

    Every image is checked before anything is written; the dataset is built in a temporary
    folder beside `out` and renamed into place only when complete. Masks are named by image
    file stem and written only inside `out`, whatever paths the annotations hold.

    Args:
        annotations: a labelme folder (searched recursively for ``*.json``), a COCO, CVAT,
            VIA or Label Studio export file, or a folder holding one such file.
        out: the dataset folder to write.
        spec: the options (`RasterizeSpec`); default: its defaults.
        on_progress: called as ``(phase, done, total)`` after each file.
        **options: `RasterizeSpec` fields, building the spec or replacing its fields
            (``labels=Path("labels.txt")``, ``jobs=1``, ``format="coco"``, ...).

    Returns:
        The report, also written as ``rasterize_report.json``.

    Raises:
        SegtoolError: bad options, an existing `out`, or (without `skip_invalid`) any invalid file.
        TypeError: an option `RasterizeSpec` does not have.
    """
    spec = spec_of(RasterizeSpec, spec, options)
    labels, images, instances, previews = spec.labels, spec.images, spec.instances, spec.previews
    inputs = [("the annotations folder", annotations), ("the labels file", labels)]
    apart = [("the image folder", spec.image_dir)] if spec.image_dir is not None else []
    checked = check_output(out, spec.overwrite, inputs=inputs, apart=apart)
    class_map = read_class_map(labels) if labels is not None else None
    if class_map is not None and spec.multilabel:
        try:
            class_map = as_multilabel(class_map)
        except SegtoolError as exc:
            raise SegtoolError(f"{labels}: {exc}") from None
    multilabel = spec.multilabel or (class_map is not None and class_map.multilabel)
    if previews and not multilabel:
        raise SegtoolError("--preview draws multi-label masks; add --multilabel")
    source = str(labels) if labels is not None else "derived from the annotations"
    with Workers(spec.jobs, min_items=MIN_FILES_FOR_WORKERS) as workers:
        # The workers start (if the folder is large enough) while the search goes on.
        files, split_of = _sources(annotations, out, spec, workers)
        what = "annotation files" if isinstance(files[0], Path) else "images of the export"
        if not isinstance(files[0], Path) and class_map is None:
            # An export's labels are known once it is read: one pass checks and draws.
            found = (label for r in files if not r.problem for label in r.labels)
            class_map = declared_class_map(files, multilabel)
            if class_map is not None:
                source = "from data.yaml's names"
            else:
                class_map = derive_class_map(found, multilabel=multilabel)
        run = partial(
            _run,
            images=images,
            workers=workers,
            on_progress=on_progress,
            instances=instances,
            previews=previews,
            level=spec.png_level,
        )
        with checked_first(checked), output_folder(out, spec.overwrite, inputs=inputs) as tmp:
            (tmp / MASKS_DIR).mkdir()
            for wanted, folder in ((images != "none", IMAGES_DIR), (instances, INSTANCES_DIR)):
                if wanted:
                    (tmp / folder).mkdir()
            if previews:
                (tmp / PREVIEWS_DIR).mkdir()
            if class_map is None:
                # The ids depend on every label, so all files are read before any is drawn.
                checks = run(files, None, None, phase="check")
                _refuse_invalid(checks, len(files), annotations, spec.skip_invalid, what)
                try:
                    class_map = derive_class_map(sorted(checks.labels), multilabel=multilabel)
                except SegtoolError as exc:
                    raise SegtoolError(f"{annotations}: {exc}") from None
                bad = {c.path for c in checks.bad}
                results = run([f for f in files if f not in bad], class_map, tmp, phase="rasterize")
                for check in checks.bad:
                    results.add(check)
            else:
                # One pass checks and draws; the temporary folder is dropped if any file is bad.
                results = run(files, class_map, tmp, phase="rasterize")
                _refuse_invalid(results, len(files), annotations, spec.skip_invalid, what)
            # OUT replaced by the new dataset must not take the folder of an image with it.
            folders = {("the images folder", folder) for folder in results.folders}
            check_output(out, spec.overwrite, inputs=inputs, apart=folders)
            report = make_report(results, out, class_map, source, instances)
            if split_of is not None:
                report.split = _write_split(tmp, split_of, annotations)
            class_map.save(tmp / CLASSES_FILE)
            write_json(tmp / REPORT_FILE, report.to_json())
    return report
