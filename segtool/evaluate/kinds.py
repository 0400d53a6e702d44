"""Which reader scores a pair of folders: the one place that looks at what the references are.

NIfTI references are label volumes named by their volume folder's ``dataset.json``; anything
else is PNG masks named by a ``classes.json`` beside or inside the references. Multi-label
class maps and ``--regions`` make the masks bit sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE
from segtool.core.errors import SegtoolError
from segtool.core.regions import parse_regions
from segtool.evaluate.nifti_reader import NiftiLabels
from segtool.evaluate.readers import MaskReader, PngBits, PngLabels
from segtool.evaluate.spec import EvalSpec

if TYPE_CHECKING:
    import numpy as np

from segtool.sources.volume_folder import (
    DATASET_JSON,
    is_nifti,
    is_volume_folder,
    read_volume_dataset,
)


def holds_nifti(folder: Path) -> bool:
    """Whether `folder` holds NIfTI files (and so is scored as volumes)."""
    return folder.is_dir() and any(is_nifti(p) for p in folder.iterdir())


def reader_for(references: Path, spec: EvalSpec) -> MaskReader:
    """The reader for `references` (and predictions named like them) under `spec`'s class
    map and regions. With ``--classes`` and the references' own class map both there, the
    references are put in ``--classes``' ids by class name (never by position).

    Raises:
        SegtoolError: a missing classes file, class maps that name different classes,
            regions without a class map, bad regions.
    """
    explicit = _explicit(spec.classes) if spec.classes is not None else None
    if holds_nifti(references):
        own, label_ignore = _volume_classes(references)
        labels = explicit or own
        if labels is None:
            raise SegtoolError(
                f"{references}: no dataset.json beside it to name the labels; pass --classes "
                f"classes.json (e.g. the run's)"
            )
        regions = parse_regions(spec.regions, labels) if spec.regions else None
        return NiftiLabels(
            regions.class_map if regions else labels,
            regions,
            *_by_name(own, references.parent / DATASET_JSON, explicit, spec),
            labels=labels,
            label_ignore=label_ignore,
            bit_predictions=spec.bit_predictions,
        )
    own_path = _classes_file(references)
    own = read_classes_json(own_path) if own_path is not None else None
    class_map = explicit or own
    if spec.regions is not None:
        if class_map is None:
            raise SegtoolError(
                f"--regions refers to class ids, but there is no classes.json beside or in "
                f"{references}; pass --classes"
            )
        regions = parse_regions(spec.regions, class_map)
        return PngBits(regions.class_map, regions)
    if class_map is not None and class_map.multilabel:
        return PngBits(class_map)
    return PngLabels(class_map, None, *_by_name(own, own_path, explicit, spec))


def _by_name(
    own: ClassMap | None, own_path: Path | None, explicit: ClassMap | None, spec: EvalSpec
) -> tuple[ClassMap | None, np.ndarray | None]:
    """(the references' own map, the lookup table into ``--classes``' ids) when the two maps
    order the same classes differently; (None, None) when the ids agree or one is missing.

    Raises:
        SegtoolError: the references name a class ``--classes`` does not (naming both maps).
    """
    if own is None or explicit is None or spec.regions is not None or own.multilabel:
        return None, None
    table, unknown = own.ids_in(explicit)
    if unknown:
        raise SegtoolError(
            f"{own_path} names the classes {', '.join(own.names)} and {spec.classes} "
            f"{', '.join(explicit.names)}: {unknown[0]!r} is not in {spec.classes}; classes "
            f"are matched by name, so pass a --classes that names every class of the "
            f"references (or none, to score with {own_path})"
        )
    return (None, None) if table is None else (own, table)


def _explicit(path: Path) -> ClassMap:
    if not path.is_file():
        raise SegtoolError(f"{path}: no such classes file; pass a classes.json")
    return read_classes_json(path)


def _classes_file(references: Path) -> Path | None:
    """The ``classes.json`` beside or inside a folder of PNG masks, if any."""
    for candidate in (references.parent / CLASSES_FILE, references / CLASSES_FILE):
        if candidate.is_file():
            return candidate
    return None


def _volume_classes(references: Path) -> tuple[ClassMap | None, int | None]:
    """The class map (and nnU-Net's ignore label value) of the ``dataset.json`` of the volume
    folder that holds `references` (its ``labelsTr/``), if there is one."""
    if is_volume_folder(references.parent):
        dataset = read_volume_dataset(references.parent)
        return dataset.class_map, dataset.label_ignore
    return None, None
