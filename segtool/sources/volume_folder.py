"""Volume folders: the Medical Segmentation Decathlon and nnU-Net v2 layouts, as cases.

A volume folder holds ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` (and optionally
``imagesTs/``). The two layouts differ in how channels (MRI sequences) are stored:

- Decathlon: ``dataset.json`` has ``modality`` ({"0": "FLAIR", ...}) and ``labels``
  ({"0": "background", ...}); ``imagesTr/<case>.nii.gz`` is one 4-D file X x Y x Z x C (3-D
  when C = 1).
- nnU-Net v2: ``dataset.json`` has ``channel_names`` and ``labels`` ({"background": 0, ...},
  optionally an ``ignore`` label); ``imagesTr/<case>_0000.nii.gz`` is one 3-D file a channel.

Labels are ``labelsTr/<case>.nii.gz`` in both. Files are read with nibabel; ``.nii`` and
``.nii.gz`` both work. This module lists cases from ``dataset.json`` and the file names;
`segtool.sources.nifti` opens and checks the files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from segtool.core.classes import ClassMap, make_class_map
from segtool.core.errors import InvalidInputError, SegtoolError

#: The file describing a volume folder.
DATASET_JSON = "dataset.json"
#: Suffixes of NIfTI files (lower case), longest first.
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: nnU-Net v2's channel suffix: ``<case>_0000.nii.gz``.
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class VolumeCase:
    """One case (patient): its image file(s) and, when labelled, its label volume.

    ``images`` is one 4-D file (Decathlon) or one 3-D file per channel, in channel order
    (nnU-Net v2).
    """

    case: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class VolumeDataset:
    """A volume folder described by its ``dataset.json``."""

    root: Path
    layout: str  # "msd" or "nnunet"
    channels: tuple[str, ...]
    class_map: ClassMap
    cases: tuple[VolumeCase, ...]  # labelled (imagesTr + labelsTr)
    test_cases: tuple[VolumeCase, ...]  # unlabelled (imagesTs)
    label_ignore: int | None = None  # nnU-Net's "ignore" label value, read as ignore_index

    @property
    def by_case(self) -> dict[str, VolumeCase]:
        """Labelled cases by name."""
        return {c.case: c for c in self.cases}


def case_name(path: Path) -> str:
    """The file name without ``.nii.gz`` / ``.nii``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_nifti(path: Path) -> bool:
    """Whether `path` is named like a NIfTI file (and is not hidden)."""
    return not path.name.startswith(".") and path.name.lower().endswith(NIFTI_SUFFIXES)


def is_volume_folder(path: Path) -> bool:
    """Whether `path` is a volume folder (has a ``dataset.json``)."""
    return (path / DATASET_JSON).is_file()


def items_of(path: Path) -> str:
    """What a dataset at `path` holds, as messages count it: "cases" in a volume folder,
    else "images"."""
    return "cases" if is_volume_folder(path) else "images"


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))


def _numbered(doc: dict, key: str, path: Path) -> tuple[str, ...]:
    """``{"0": "FLAIR", "1": "T1"}`` -> ("FLAIR", "T1"), checking the keys are 0..C-1."""
    table = doc.get(key)
    if not isinstance(table, dict) or not table:
        raise SegtoolError(f'{path}: "{key}" must be a non-empty object like {{"0": "FLAIR"}}')
    try:
        by_index = {int(k): str(v) for k, v in table.items()}
    except ValueError:
        raise SegtoolError(
            f'{path}: "{key}" keys {sorted(table)} must be numbers "0", "1", ...'
        ) from None
    if sorted(by_index) != list(range(len(by_index))):
        raise SegtoolError(
            f'{path}: "{key}" keys {sorted(by_index)} are not 0..{len(by_index) - 1}'
        )
    return tuple(by_index[i] for i in range(len(by_index)))


def _class_map(labels: dict[int, str], path: Path) -> ClassMap:
    ids = sorted(labels)
    if ids != list(range(len(ids))) or not ids:
        raise SegtoolError(
            f"{path}: label values {ids} are not 0..{len(ids) - 1}; segtool needs contiguous "
            f"ids with 0 the background"
        )
    return make_class_map([labels[i] for i in ids], source=str(path))


def _read_doc(root: Path) -> tuple[dict, Path]:
    path = root / DATASET_JSON
    if not path.is_file():
        raise SegtoolError(
            f"{path}: no such file; a volume folder has dataset.json, imagesTr/ and labelsTr/ "
            f"(Medical Segmentation Decathlon or nnU-Net v2 layout)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegtoolError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise SegtoolError(f"{path}: must hold a JSON object")
    return doc, path


def read_volume_dataset(root: Path) -> VolumeDataset:
    """Read a volume folder's ``dataset.json`` and list its cases (files are not opened).

    Args:
        root: the folder holding ``dataset.json``.

    Returns:
        the layout, channel names, class map and cases.

    Raises:
        SegtoolError: no or bad ``dataset.json``, unknown layout, a label without an image
            (or the other way round), a missing channel file.
    """
    doc, path = _read_doc(root)
    if "channel_names" in doc:
        return _read_nnunet(root, doc, path)
    if "modality" in doc:
        return _read_msd(root, doc, path)
    raise SegtoolError(
        f'{path}: has neither "modality" (Medical Segmentation Decathlon) nor "channel_names" '
        f"(nnU-Net v2); add the one for your layout"
    )


def _read_msd(root: Path, doc: dict, path: Path) -> VolumeDataset:
    channels = _numbered(doc, "modality", path)
    labels_doc = doc.get("labels")
    if not isinstance(labels_doc, dict):
        raise SegtoolError(f'{path}: "labels" must be an object like {{"0": "background"}}')
    try:
        labels = {int(k): str(v) for k, v in labels_doc.items()}
    except ValueError:
        raise SegtoolError(
            f'{path}: "labels" keys must be the label values "0", "1", ...'
        ) from None
    class_map = _class_map(labels, path)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    _need_dir(images_dir)
    _need_dir(labels_dir)
    images = {case_name(p): p for p in _nifti_files(images_dir)}
    label_files = {case_name(p): p for p in _nifti_files(labels_dir)}
    _check_paired(images, label_files, images_dir, labels_dir)
    cases = tuple(VolumeCase(c, (images[c],), label_files[c]) for c in sorted(label_files))
    ts = root / "imagesTs"
    test = tuple(VolumeCase(case_name(p), (p,)) for p in _nifti_files(ts)) if ts.is_dir() else ()
    return VolumeDataset(root, "msd", channels, class_map, cases, test)


def _read_nnunet(root: Path, doc: dict, path: Path) -> VolumeDataset:
    channels = _numbered(doc, "channel_names", path)
    labels_doc = doc.get("labels")
    if not isinstance(labels_doc, dict):
        raise SegtoolError(f'{path}: "labels" must be an object like {{"background": 0}}')
    labels: dict[int, str] = {}
    ignore = None
    for name, value in labels_doc.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise SegtoolError(
                f'{path}: label "{name}" is {value!r}; segtool reads one integer per label '
                f"(region labels come from segtool's --regions option instead)"
            )
        if name == "ignore":
            ignore = value
        elif value in labels:
            raise SegtoolError(f'{path}: labels "{labels[value]}" and "{name}" share value {value}')
        else:
            labels[value] = str(name)
    class_map = _class_map(labels, path)
    if ignore is not None and ignore != class_map.num_classes:
        raise SegtoolError(
            f'{path}: the "ignore" label is {ignore}; nnU-Net v2 wants it to be the highest '
            f"value ({class_map.num_classes})"
        )
    ending = str(doc.get("file_ending", ".nii.gz"))
    if ending.lower() not in NIFTI_SUFFIXES:
        raise SegtoolError(f'{path}: file_ending "{ending}" is not .nii.gz or .nii')
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    _need_dir(images_dir)
    _need_dir(labels_dir)
    label_files = {case_name(p): p for p in _nifti_files(labels_dir)}
    grouped = group_channel_files(_nifti_files(images_dir), len(channels))
    _check_paired(grouped, label_files, images_dir, labels_dir)
    cases = tuple(VolumeCase(c, grouped[c], label_files[c]) for c in sorted(label_files))
    ts = root / "imagesTs"
    test: tuple[VolumeCase, ...] = ()
    if ts.is_dir():
        test = tuple(
            VolumeCase(c, files)
            for c, files in sorted(group_channel_files(_nifti_files(ts), len(channels)).items())
        )
    return VolumeDataset(root, "nnunet", channels, class_map, cases, test, ignore)


def group_channel_files(files: list[Path], num_channels: int) -> dict[str, tuple[Path, ...]]:
    """Group nnU-Net v2 files ``<case>_0000.nii.gz`` ... by case, in channel order.

    Raises:
        SegtoolError: a file without the ``_XXXX`` channel suffix, a channel number beyond the
            channels dataset.json names, or a case missing a channel file.
    """
    by_case: dict[str, dict[int, Path]] = {}
    for path in files:
        match = _CHANNEL_RE.match(case_name(path))
        if not match:
            raise SegtoolError(
                f"{path}: not named <case>_XXXX.nii.gz (XXXX the channel number, as nnU-Net v2 "
                f"names image files); rename it"
            )
        channel = int(match["channel"])
        if channel >= num_channels:
            raise SegtoolError(
                f"{path}: channel {channel}, but dataset.json names {num_channels} channel(s); "
                f"fix channel_names or remove the file"
            )
        by_case.setdefault(match["case"], {})[channel] = path
    out: dict[str, tuple[Path, ...]] = {}
    for case, channels in by_case.items():
        missing = [i for i in range(num_channels) if i not in channels]
        if missing:
            some = next(iter(channels.values()))
            expected = some.parent / f"{case}_{missing[0]:04d}{some.name[len(case) + 5 :]}"
            raise SegtoolError(
                f"{expected}: missing channel {missing[0]} of case {case!r} (dataset.json names "
                f"{num_channels} channels); add the file"
            )
        out[case] = tuple(channels[i] for i in range(num_channels))
    return out


def image_cases(folder: Path, num_channels: int) -> list[VolumeCase]:
    """The unlabelled cases of a folder of images, either layout (for predict).

    Files named ``<case>_XXXX`` are grouped as nnU-Net v2 channel files when every file is
    so named and the model takes several channels or the names say so; otherwise each file is
    one case.

    Raises:
        SegtoolError: no NIfTI files, or a case missing a channel file.
    """
    if not folder.is_dir():
        raise SegtoolError(f"{folder}: no such folder of .nii.gz volumes")
    files = _nifti_files(folder)
    if not files:
        raise SegtoolError(f"{folder}: no .nii.gz or .nii files")
    if all(_CHANNEL_RE.match(case_name(p)) for p in files):
        grouped = group_channel_files(files, num_channels)
        return [VolumeCase(c, grouped[c]) for c in sorted(grouped)]
    return [VolumeCase(case_name(p), (p,)) for p in files]


def _need_dir(folder: Path) -> None:
    if not folder.is_dir():
        raise SegtoolError(f"{folder}: no such folder; a volume folder has imagesTr/ and labelsTr/")


def _check_paired(images: dict, labels: dict, images_dir: Path, labels_dir: Path) -> None:
    lonely = [
        f"{labels[c]}: no image for case {c!r} in {images_dir}"
        for c in labels.keys() - images.keys()
    ]
    lonely += [
        f"{images_dir}/{c}: no label {labels_dir}/{c}.nii.gz" for c in images.keys() - labels.keys()
    ]
    if lonely:
        raise InvalidInputError(f"{len(lonely)} unpaired case(s)", sorted(lonely))
    if not labels:
        raise SegtoolError(f"{labels_dir}: no .nii.gz label volumes")
