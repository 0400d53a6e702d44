"""Image + mask folders made elsewhere -> a segtool dataset (same layout, report and safety).

Every mask is read and checked first (size against its image as displayed, every value
against the table); only then is anything written, into a folder renamed into place at the end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from segtool.core.classes import ClassMap, make_class_map, read_class_map
from segtool.core.constants import (
    BACKGROUND_NAME,
    CLASSES_FILE,
    IGNORE_LABEL,
    IMAGES_DIR,
    MASK_SUFFIX,
    MASKS_DIR,
    REPORT_FILE,
    SPLIT_FILE,
)
from segtool.core.errors import InvalidInputError, SegtoolError
from segtool.core.files import check_output, checked_first, output_folder, write_json
from segtool.core.images import ImageReadError, displayed_size
from segtool.core.masks import write_mask
from segtool.core.parallel import ProgressFn, default_jobs, imap_jobs, with_progress
from segtool.rasterize.result import place_image
from segtool.rasterize.spec import ImportSpec, spec_of
from segtool.sources.maskconventions import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    camvid_table,
    conventional_colors,
    read_names,
)
from segtool.sources.maskfolders import (
    FOREGROUND_NAME,
    VOC_CLASSES,
    MaskLayout,
    MaskPair,
    describe,
    find_layout,
    map_values,
    parse_values,
    read_colors,
    read_values,
    value_counts,
)
from segtool.sources.shapes import ImageSource


@dataclass
class MaskScan:
    """What the checking pass learned about one pair."""

    pair: MaskPair
    problem: str | None = None
    rgb: bool = False
    counts: dict[int, int] = field(default_factory=dict)


def _scan(pair: MaskPair) -> MaskScan:
    try:
        width, height, _ = displayed_size(pair.image)
    except ImageReadError as exc:
        return MaskScan(pair, problem=f"{pair.image}: {exc}")
    try:
        values, rgb = read_values(pair.mask)
    except SegtoolError as exc:
        return MaskScan(pair, problem=str(exc))
    if values.shape != (height, width):
        return MaskScan(
            pair,
            problem=f"{pair.mask}: {values.shape[1]} x {values.shape[0]} (width x height) but its "
            f"image {pair.image} is {width} x {height} as displayed; re-export the mask",
        )
    return MaskScan(pair, rgb=rgb, counts=value_counts(values))


def _binary_table(scans: list[MaskScan]) -> dict[int, str]:
    """The table for binary masks: 0 background, 255 (or 1) the foreground."""
    found = set().union(*(s.counts for s in scans)) if scans else set()
    for high in (255, 1):
        if found <= {0, high}:
            return {0: BACKGROUND_NAME, high: FOREGROUND_NAME}
    shown = ", ".join(str(v) for v in sorted(found)[:12])
    raise SegtoolError(
        f"the masks hold values {shown}{', ...' if len(found) > 12 else ''}, not just 0/255 "
        f"or 0/1; name each value: --values '0=_background_,1=road,2=car' (palette PNGs: "
        f"their palette indices), or pass --colors for colour masks"
    )


def _class_map(
    table: dict[int, str],
    labels: Path | None,
    by_color: dict[tuple[int, int, int], str],
    background_scored: bool = False,
) -> ClassMap:
    """The dataset's class map: `labels`, else background 0 (where the table names one) and
    the table's classes in value order (colour tables: file order). A table without a
    background gets none invented: its first class is id 0, a real class (background_scored),
    as CamVid's sky or ISBI's membrane. `by_color`'s colours are kept."""
    names = [n for n in table.values() if n != IGNORE_LABEL]
    if labels is not None:
        cmap = read_class_map(labels)
        missing = sorted(set(names) - set(cmap.names))
        if missing:
            raise SegtoolError(
                f"{labels}: class {missing[0]!r} of the value table is not in the class map; "
                f"add it or fix the table"
            )
        return replace(cmap, background_scored=cmap.background_scored or background_scored)
    ordered = list(by_color.values()) or [table[v] for v in sorted(table)]
    ordered = [n for n in dict.fromkeys(ordered) if n not in (IGNORE_LABEL, BACKGROUND_NAME)]
    has_background = BACKGROUND_NAME in table.values()
    ordered = [BACKGROUND_NAME, *ordered] if has_background else ordered
    cmap = make_class_map(ordered, source="value table")
    cmap = replace(cmap, background_scored=background_scored or not has_background)
    if not by_color or cmap.sixteen_bit:
        return cmap
    # Colour masks keep their colours: the dataset's masks look like the originals.
    color_of = {name: color for color, name in reversed(list(by_color.items()))}
    colors = tuple(color_of.get(n, cmap.colors[i]) for i, n in enumerate(cmap.names))
    return replace(cmap, colors=colors)


def _unmapped(scan: MaskScan, table: dict[int, str]) -> str | None:
    missing = {v: n for v, n in scan.counts.items() if v not in table}
    if not missing:
        return None
    items = sorted(missing.items(), key=lambda item: -item[1])
    what = "colour" if scan.rgb else "value"
    first = f"{what} {describe(items[0][0], scan.rgb)} ({items[0][1]} px)"
    others = ", ".join(f"{describe(v, scan.rgb)} ({n} px)" for v, n in items[1:4])
    more = f", and {others}" + (", ..." if len(items) > 4 else "") if others else ""
    fix = "--colors" if scan.rgb else "--values"
    return (
        f"{scan.pair.mask}: {first} is not in the table{more}; add it to {fix} or pass "
        f"--unknown ignore to make it the ignore value"
    )


def _convert(
    pair: MaskPair,
    ids: dict[int, int],
    fill: int | None,
    class_map: ClassMap,
    out: Path,
    images: str,
) -> dict[int, int]:
    values, _ = read_values(pair.mask)
    mask = map_values(values, ids, fill)
    write_mask(out / MASKS_DIR / f"{pair.stem}{MASK_SUFFIX}", mask, class_map, atomic=False)
    if images != "none":
        image = ImageSource(0, 0, pair.image, None, pair.image.suffix)
        place_image(image, out / IMAGES_DIR / f"{pair.stem}{pair.image.suffix}", images)
    return value_counts(mask)


@dataclass
class ImportReport:
    """What `import_masks` did: the class map, the values found, skipped files, the split."""

    out: Path
    class_map: ClassMap
    layout: str
    table: dict[int, str]
    rgb: bool
    n_images: int = 0
    values: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)
    split: dict | None = None
    #: where the class names came from when the folder said which dataset it is
    names_from: str | None = None

    def to_json(self) -> dict:
        """The report document (``rasterize_report.json`` in the dataset)."""
        total = sum(self.pixels.values()) or 1
        return {
            "n_images": self.n_images,
            "layout": self.layout,
            "class_map_source": "value table",
            "class_names_from": self.names_from,
            "background_scored": self.class_map.background_scored,
            "classes": {
                name: {
                    "id": i,
                    "pixels": int(self.pixels.get(i, 0)),
                    "pixel_share": self.pixels.get(i, 0) / total,
                }
                for i, name in enumerate(self.class_map.names)
            },
            "ignore": {
                "value": self.class_map.ignore_index,
                "pixels": int(self.pixels.get(self.class_map.ignore_index, 0)),
            },
            "values": {
                describe(v, self.rgb): {"pixels": int(n), "class": self.table.get(v)}
                for v, n in sorted(self.values.items())
            },
            "skipped": self.skipped,
            "split": None
            if self.split is None
            else {k: len(self.split[k]) for k in ("train", "val", "test")},
        }


def _inputs(images: Path, masks: Path | None) -> list[tuple[str, Path | None]]:
    """What import-masks reads, for the output mechanism's collision check."""
    return [("the image folder", images), ("the mask folder", masks)]


def _choose_table(
    spec: ImportSpec,
    packed: dict[int, str],
    layout: MaskLayout,
    good: list[MaskScan],
    colors_from: str | None = None,
) -> tuple[dict[int, str], str | None]:
    """Mask value -> class name: the colour table, --values, --names, VOC's or CamVid's
    table (where the folder says which), or binary; and where conventional names came from
    (`colors_from`: the colour table the folder ships)."""
    if packed:
        return packed, colors_from
    if spec.values is not None:
        table = parse_values(spec.values)
        if len(table) == 1 and 0 not in table:
            table[0] = BACKGROUND_NAME  # "255=membrane" names a binary mask's foreground
        return table, None
    if spec.names is not None:
        return read_names(spec.names), None
    if layout.voc:
        why = "PASCAL VOC's 21 classes (255 ignored): the tree has JPEGImages/ + SegmentationClass/"
        return dict(enumerate(VOC_CLASSES)) | {255: IGNORE_LABEL}, why
    found = set().union(*(s.counts for s in good)) if good else set()
    camvid = camvid_table(layout.root, found) if layout.root is not None else None
    if camvid is not None:
        return camvid
    return _binary_table(good), None


def _colors(spec: ImportSpec, layout: MaskLayout, scans: list[MaskScan]) -> tuple:
    """The colour table: --colors, else the one a CamVid folder ships when its masks are in
    colour and nothing else names them (with the evidence, said to the user)."""
    if spec.colors is not None or spec.values is not None or spec.names is not None:
        return spec.colors, None
    if layout.root is None or not any(s.rgb for s in scans):
        return None, None
    return conventional_colors(layout.root) or (None, None)


def _problem(scan: MaskScan, packed: dict[int, str], table: dict, unknown: str) -> str | None:
    """What is wrong with one scanned pair, if anything."""
    if scan.problem:
        return scan.problem
    if scan.rgb and not packed:
        return f"{scan.pair.mask}: a colour mask; pass a colour table with --colors"
    if packed and not scan.rgb:
        return (
            f"{scan.pair.mask}: a grey or palette mask, but --colors is for RGB masks; use --values"
        )
    return _unmapped(scan, table) if unknown == "error" else None


def _kept_split(layout: MaskLayout, kept: set[str]) -> dict | None:
    """The layout's official split, less the pairs that were skipped."""
    split = layout.split()
    if split is None:
        return None
    return {k: [s for s in v if s in kept] if isinstance(v, list) else v for k, v in split.items()}


def _write(
    pairs: list[MaskPair],
    report: ImportReport,
    fill: int | None,
    image_mode: str,
    jobs: int,
    overwrite: bool,
    on_progress: ProgressFn | None,
    inputs: list[tuple[str, Path | None]],
) -> None:
    """Convert every pair into a dataset folder built beside `report.out`, then swap it in."""
    class_map = report.class_map
    value_of = class_map.value_of()
    ids = {v: value_of[name] for v, name in report.table.items()}
    with output_folder(report.out, overwrite, inputs=inputs) as tmp:
        (tmp / MASKS_DIR).mkdir()
        if image_mode != "none":
            (tmp / IMAGES_DIR).mkdir()
        work = partial(
            _convert, ids=ids, fill=fill, class_map=class_map, out=tmp, images=image_mode
        )
        for counts in with_progress(
            imap_jobs(work, pairs, jobs), "import", len(pairs), on_progress
        ):
            report.n_images += 1
            report.pixels.update(counts)
        class_map.save(tmp / CLASSES_FILE)
        write_json(tmp / REPORT_FILE, report.to_json())
        if report.split is not None:
            write_json(tmp / SPLIT_FILE, report.split)


def import_masks(
    images: Path,
    masks: Path | None,
    out: Path,
    spec: ImportSpec | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> ImportReport:
    """Turn an image folder and a mask folder (or a VOC / split-folder tree) into a dataset.

    Args:
        images: the image folder, or the root of a recognised tree when `masks` is None.
        masks: the mask folder (paired with `images` by file stem).
        out: the dataset folder to write.
        spec: the options (`ImportSpec`: the value or colour table, the class map, what to do
            with unknown values, images, jobs, ...); default: its defaults.
        on_progress: called as ``(phase, done, total)`` after each file.
        **options: `ImportSpec` fields, building the spec or replacing its fields.

    Returns:
        The report, also written as ``rasterize_report.json``.

    Raises:
        SegtoolError: bad options, an existing `out`, or (without `skip_invalid`) any bad pair.
        TypeError: an option `ImportSpec` does not have.
    """
    spec = spec_of(ImportSpec, spec, options)
    checked = check_output(out, spec.overwrite, inputs=_inputs(images, masks))
    with checked_first(checked):  # only what is at OUT now may be replaced at the end
        return _import(images, masks, out, spec, on_progress)


def _import(
    images: Path, masks: Path | None, out: Path, spec: ImportSpec, on_progress: ProgressFn | None
) -> ImportReport:
    """`import_masks` after its output check."""
    unknown = spec.unknown
    layout = find_layout(images, masks)
    if not layout.pairs:
        first = f", e.g. {layout.unpaired[0]}" if layout.unpaired else ""
        raise SegtoolError(
            f"{images}: no image/mask pairs; images and masks are paired by file stem{first}"
        )
    jobs = spec.jobs or default_jobs()
    scans = list(
        with_progress(imap_jobs(_scan, layout.pairs, jobs), "check", len(layout.pairs), on_progress)
    )
    colors, names_from = _colors(spec, layout, scans)
    by_color, _ = read_colors(colors) if colors is not None else ({}, [])
    packed = {(r << 16) | (g << 8) | b: name for (r, g, b), name in by_color.items()}
    good = [s for s in scans if not s.problem and s.rgb == bool(packed)]
    table, names_from = _choose_table(spec, packed, layout, good, names_from)
    problems = layout.unpaired + [_problem(s, packed, table, unknown) for s in scans]
    problems = [p for p in problems if p]
    if unknown == "error":
        good = [s for s in good if not _unmapped(s, table)]
    if problems and not spec.skip_invalid:
        raise InvalidInputError(
            f"{len(problems)} problem(s) in {len(layout.pairs)} image/mask pairs, nothing was "
            f"written (fix them or pass --skip-invalid)",
            problems,
        )
    if not good:
        raise SegtoolError(f"{images}: no valid image/mask pair left to import")
    camvid = not by_color and names_from and table.get(0) == CAMVID_CLASSES[0][0]
    colours = CAMVID_COLORS if camvid else by_color  # conventional names keep their colours
    class_map = _class_map(table, spec.labels, colours, spec.background_scored)
    report = ImportReport(out, class_map, layout.kind, table, bool(packed), names_from=names_from)
    report.skipped = [{"file": p.split(":", 1)[0], "reason": p} for p in problems]
    for scan in good:
        report.values.update(scan.counts)
    report.split = _kept_split(layout, {s.pair.stem for s in good})
    fill = class_map.ignore_index if unknown == "ignore" else None
    _write(
        [s.pair for s in good],
        report,
        fill,
        spec.image_mode,
        jobs,
        spec.overwrite,
        on_progress,
        _inputs(images, masks),
    )
    return report
