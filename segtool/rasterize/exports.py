"""Export files (COCO, CVAT, VIA, Label Studio) -> records checked and drawn like labelme files.

The readers turn a whole export into per-image records in this process; each record then goes
through the same worker step as a labelme file: find the image, check its size and labels,
draw its shapes with the one drawing path, write the mask and the image.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from segtool.core import png
from segtool.core.classes import ClassMap
from segtool.core.constants import IMAGES_DIR, MASK_SUFFIX, MASKS_DIR
from segtool.core.errors import SegtoolError
from segtool.core.images import FORMAT_SUFFIX, ImageReadError, displayed_size
from segtool.core.names import name_key, sibling_note, spelled_apart, spellings
from segtool.rasterize.instances import INSTANCES_DIR, draw_objects, write_instances
from segtool.rasterize.result import (
    FileResult,
    label_problem,
    place_image,
    write_exclusive,
    write_multilabel,
)
from segtool.sources.records import ImageRecord, is_file
from segtool.sources.shapes import ImageSource, far_shape


def read_export(
    fmt: str,
    path: Path,
    image_dir: Path | None,
    *,
    via_attribute: str | None = None,
    crowd: str = "ignore",
) -> list[ImageRecord]:
    """Every image record of one export file.

    Raises:
        SegtoolError: the file cannot be read as `fmt`, or two images share a mask name.
    """
    if fmt == "yolo":  # a dataset folder, its images found by the layout
        from segtool.sources.yolo import read_yolo

        records = read_yolo(path)
        _check_mask_names(path, records)
        return records
    if not path.is_file():
        raise SegtoolError(f"{path}: a {fmt} export is one file; pass the file, not a folder")
    if image_dir is not None and not image_dir.is_dir():
        raise SegtoolError(f"{image_dir}: --image-dir is not a folder")
    # Each reader is loaded only when its format is asked for.
    if fmt == "via":
        from segtool.sources.via import read_via

        records = read_via(path, image_dir, attribute=via_attribute)
    elif fmt == "coco":
        from segtool.sources.coco import read_coco

        records = read_coco(path, image_dir, crowd=crowd)
    elif fmt == "cvat":
        from segtool.sources.cvat import read_cvat

        records = read_cvat(path, image_dir)
    else:
        from segtool.sources.labelstudio import read_labelstudio

        records = read_labelstudio(path, image_dir)
    _check_mask_names(path, records)
    return records


def declared_class_map(records: list[ImageRecord], multilabel: bool) -> ClassMap | None:
    """The class map an export fixes itself (YOLO's ``data.yaml``: background 0, then its
    names in index order), or None when its ids are derived from the labels.

    Raises:
        SegtoolError: the declared names do not make a class map (a name twice).
    """
    from segtool.core.classes import make_class_map
    from segtool.core.constants import BACKGROUND_NAME

    declared = records[0].classes if records else ()
    if not declared:
        return None
    source = "data.yaml's names"
    return make_class_map([BACKGROUND_NAME, *declared], source=source, multilabel=multilabel)


def _check_mask_names(path: Path, records: list[ImageRecord]) -> None:
    """Refuse two images whose masks would share a name (a case-insensitive disk included), and
    an image whose mask would be a hidden file, which every later step skips."""
    seen: dict[str, ImageRecord] = {}
    for record in records:
        if record.image is None and record.data is None:
            continue  # a record that only carries a problem
        mask = f"masks/{record.stem}{MASK_SUFFIX}"
        if record.stem.startswith("."):
            raise SegtoolError(
                f"{path}: image {record.name!r} would write the hidden file {mask}, which "
                f"split, train and evaluate skip; rename the image without the leading dot"
            )
        other = seen.get(name_key(record.stem))
        if other is not None and spelled_apart(other.stem, record.stem):
            raise SegtoolError(
                f"{path}: images {other.name!r} and {record.name!r} would both write "
                f"{mask}: {spellings(other.stem, record.stem)}"
            )
        if other is not None:
            case = (
                "" if other.stem == record.stem else " on a case-insensitive disk (macOS, Windows)"
            )
            raise SegtoolError(
                f"{path}: images {other.name!r} and {record.name!r} would both write "
                f"{mask}{case}; masks are named by file stem, so rename one"
            )
        seen[name_key(record.stem)] = record


def resolve_record_image(record: ImageRecord) -> ImageSource:
    """The record's image (embedded data first, as labelme does), checked against its size.

    Raises:
        ValueError: no image, an unreadable one, or a size that disagrees with the export.
    """
    try:
        if record.data is not None:
            width, height, fmt = displayed_size(record.data)
            source = ImageSource(width, height, None, record.data, FORMAT_SUFFIX.get(fmt, ".img"))
        elif record.image is None or not is_file(record.image):
            folder = record.image.parent if record.image is not None else "the image folder"
            note = sibling_note(record.image) if record.image is not None else ""
            raise ValueError(
                f"image {record.name!r} not found in {folder}; pass --image-dir with the "
                f"folder that holds the images{note}"
            )
        else:
            width, height, _ = displayed_size(record.image)
            source = ImageSource(width, height, record.image, None, record.image.suffix)
    except ImageReadError as exc:
        raise ValueError(f"image {record.name!r}: {exc}; re-export the image") from exc
    recorded = (record.width, record.height)
    if record.width is not None and recorded != (source.width, source.height):
        raise ValueError(
            f"image {record.name!r} is {source.width} x {source.height} (width x height, EXIF "
            f"orientation applied) but the export says {record.width} x {record.height}; "
            f"re-export or use the image the annotations were made on"
        )
    return source


def process_record(
    record: ImageRecord,
    class_map: ClassMap | None,
    out: Path | None,
    images: str,
    level: int = png.DEFAULT_LEVEL,
    previews: bool = False,
    instances: bool = False,
) -> FileResult:
    """Check one record against `class_map` and, given `out`, write its mask (PNG `level`;
    a multi-label mask, and with `previews` its picture, for a multi-label map), image and,
    with `instances`, its instance mask (`segtool.rasterize.instances`).

    Never raises for a bad record: the problem comes back as ``FileResult.problem``.
    """
    key = Path(record.name)
    if record.problem:
        return FileResult(key, problem=f"{record.export}: {record.problem}")
    try:
        source = resolve_record_image(record)
    except ValueError as exc:
        return FileResult(key, problem=f"{record.export}: {exc}")
    problem = far_shape(record.shapes, source.width, source.height)
    if class_map is not None:
        problem = problem or label_problem(record.labels, frozenset(class_map.names))
    if problem:
        return FileResult(key, problem=f"{record.export}: image {record.name!r}: {problem}")
    result = FileResult(key, labels=sorted(record.labels), image=source.file)
    if out is None or class_map is None:
        return result
    if instances:
        try:
            ids, objects = draw_objects(record.shapes, source.height, source.width)
        except ValueError as exc:
            where = f"{record.export}: image {record.name!r}"
            return FileResult(key, problem=f"{where}: {exc}; split the image's annotations")
        write_instances(out / INSTANCES_DIR / f"{record.stem}{MASK_SUFFIX}", ids)
        result.objects = Counter(objects)
    if class_map.multilabel:
        result.pixels = write_multilabel(
            record.shapes, source, class_map, out, record.stem, previews
        )
    else:
        target = out / MASKS_DIR / f"{record.stem}{MASK_SUFFIX}"
        result.pixels = write_exclusive(record.shapes, source, class_map, target, level)
    if images != "none":
        result.warnings += place_image(
            source, out / IMAGES_DIR / f"{record.stem}{source.suffix}", images
        )
    result.shapes = Counter(s.label for s in record.shapes)
    result.outside = sum(not s.inside(source.width, source.height) for s in record.shapes)
    return result
