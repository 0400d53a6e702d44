"""Which annotation format a path holds, decided from the content, not the file name."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from segtool.core.errors import SegtoolError
from segtool.sources.records import JsonFileError, load_json

#: Every format ``segtool rasterize --format`` accepts (``auto`` detects).
FORMATS = ("labelme", "coco", "cvat", "via", "labelstudio", "yolo")
#: A folder with more JSON/XML files than this at its top is taken for a labelme folder.
_MAX_SNIFFED = 3
#: How much of an XML file is read to recognise it.
_XML_SNIFF_BYTES = 4096
#: How `load_json`'s messages start (a ``.json`` file that is no JSON at all).
_JSON_PROBLEMS = ("cannot read", "not UTF-8", "not valid JSON", "JSON nested")


def sniff_json(doc: Any) -> str | None:
    """The format of a parsed JSON document, or None."""
    if isinstance(doc, dict):
        if isinstance(doc.get("shapes"), list):
            return "labelme"
        if isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list):
            return "coco"
        from segtool.sources.via import via_entries  # readers load only when needed
        from segtool.sources.via3 import is_via3

        return "via" if via_entries(doc) is not None or is_via3(doc) else None
    from segtool.sources.labelstudio import is_labelstudio

    return "labelstudio" if is_labelstudio(doc) else None


def describe_json(doc: Any) -> str:
    """A few words on what a JSON document looks like, for an error message."""
    if isinstance(doc, dict):
        keys = ", ".join(map(repr, list(doc)[:6])) or "no keys"
        return f"a JSON object with keys {keys}"
    if isinstance(doc, list):
        return f"a JSON list of {len(doc)} item(s)"
    return f"a JSON {type(doc).__name__}"


def sniff_file(path: Path) -> tuple[str | None, str]:
    """(format or None, what the file looks like) for one file."""
    if path.suffix.lower() == ".xml":
        raw = path.read_bytes()[:_XML_SNIFF_BYTES]
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        head = raw.decode("utf-16" if utf16 else "utf-8", "replace")
        if "<annotations" in head:
            return "cvat", "a CVAT XML file"
        return None, "an XML file without CVAT's <annotations> root"
    try:
        doc = load_json(path)
    except JsonFileError as exc:
        return None, str(exc)
    return sniff_json(doc), describe_json(doc)


def _failed_json(path: Path, looks: str) -> bool:
    """True when `looks` (from `sniff_file`) says that a ``.json`` file failed to parse."""
    return path.suffix.lower() == ".json" and looks.startswith(_JSON_PROBLEMS)


def detect(source: Path) -> tuple[str, Path]:
    """The format of `source` and the path its reader takes.

    A labelme folder stays a folder; a folder holding exactly one COCO, CVAT, VIA or Label
    Studio file gives that file; a folder with a ``data.yaml`` (or the file) is a YOLO
    dataset.

    Raises:
        SegtoolError: nothing recognisable, saying what was found and which formats exist.
    """
    from segtool.sources.yolo import YAML_NAMES, yaml_in

    formats = ", ".join(FORMATS)
    if source.is_file() and source.name in YAML_NAMES:
        return "yolo", source
    if source.is_dir() and yaml_in(source) is not None:
        return "yolo", source
    if source.is_file():
        found, looks = sniff_file(source)
        if found == "labelme":
            raise SegtoolError(
                f"{source}: a single labelme file; pass the folder that holds the labelme files"
            )
        if found is None and _failed_json(source, looks):
            raise SegtoolError(f"{source}: {looks}; fix or re-export the file")
        if found is None:
            raise SegtoolError(
                f"{source}: {looks}, which is none of the formats segtool reads ({formats}); "
                f"pass --format if you know which it is"
            )
        return found, source
    if not source.is_dir():
        raise SegtoolError(f"{source}: no such file or folder")
    # A labelme folder holds many JSON files, an export folder one file beside its images:
    # only a folder with at most a few candidates is read to tell them apart.
    candidates = [
        p for p in sorted(source.iterdir()) if p.is_file() and p.suffix.lower() in (".json", ".xml")
    ]
    exports = []
    for path in candidates if len(candidates) <= _MAX_SNIFFED else ():
        found, _ = sniff_file(path)
        if found not in (None, "labelme"):
            exports.append((found, path))
    if len(exports) == 1:
        return exports[0]
    if len(exports) > 1:
        names = ", ".join(f"{p.name} ({f})" for f, p in exports)
        raise SegtoolError(f"{source}: several export files ({names}); pass one of them")
    return "labelme", source


#: Split names and the folder names exports are kept in (``balloon/train/via_region_data.json``).
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


def split_exports(source: Path) -> tuple[str, dict[str, Path]] | None:
    """One export file per split, each in a split folder of `source` (``train/``, ``val/``,
    ``test/`` and their aliases, as VIA's balloon example and many downloads ship): their
    format and the file of each split, or None when `source` is not laid out so.

    Raises:
        SegtoolError: the split folders hold exports of different formats.
    """
    if not source.is_dir():
        return None
    found: dict[str, tuple[str, Path]] = {}
    for split, aliases in SPLIT_FOLDERS.items():
        folder = next((source / a for a in aliases if (source / a).is_dir()), None)
        if folder is None:
            continue
        candidates = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".json", ".xml")]
        exports = [(f, p) for p in candidates[:_MAX_SNIFFED] if (f := sniff_file(p)[0])]
        exports = [(f, p) for f, p in exports if f != "labelme"]
        if len(exports) == 1 and len(candidates) <= _MAX_SNIFFED:
            found[split] = exports[0]
    if len(found) < 2:
        return None
    formats = {f for f, _ in found.values()}
    if len(formats) > 1:
        shown = ", ".join(f"{p} ({f})" for f, p in found.values())
        raise SegtoolError(
            f"{source}: the split folders hold exports of different formats: {shown}"
        )
    return formats.pop(), {split: path for split, (_, path) in found.items()}
