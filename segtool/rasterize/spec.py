"""The options of `rasterize_dir` and `import_masks` as frozen, typed specs, checked once.

Both functions take a spec, or the keyword arguments that build one (README:
``rasterize_dir(Path("annotations"), Path("dataset"), labels=Path("labels.txt"))``), or a spec
and keywords that replace some of its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from segtool.core import png
from segtool.core.constants import IMAGE_MODES
from segtool.core.errors import SegtoolError, check_choice

#: What import-masks does with a mask value its table does not name.
UNKNOWN_MODES = ("error", "ignore")

Spec = TypeVar("Spec", "RasterizeSpec", "ImportSpec")


@dataclass(frozen=True)
class RasterizeSpec:
    """How `rasterize_dir` turns annotations into a dataset (each field as its option).

    Attributes:
        labels: a labelme ``labels.txt`` or a ``classes.json``; None derives the map from the
            annotations (background 0, then labels sorted by name).
        images: ``copy``, ``link`` (hard link) or ``none``.
        jobs: worker processes; None uses every core (none for small folders, where starting
            them costs more than it saves).
        skip_invalid: convert the valid files and list the others in the report.
        overwrite: replace the output if it exists.
        multilabel: write multi-label masks (a bit set per pixel); also implied by a
            ``classes.json`` with ``"multilabel": true``.
        instances: also write ``instances/<stem>.png``, one id per object.
        previews: also write ``previews/<stem>.png``, colour pictures of multi-label masks.
        png_level: mask PNG compression, 0..9 (1, run-length, by default).
        format: ``auto`` (detected from the content) or one of `segtool.sources.detect.FORMATS`.
        image_dir: where an export's image paths start; default: the export file's folder.
        via_attribute: the VIA region attribute holding the class.
        crowd: COCO ``iscrowd`` regions: ``ignore`` (the ignore value) or ``class``.
    """

    labels: Path | None = None
    images: str = "copy"
    jobs: int | None = None
    skip_invalid: bool = False
    overwrite: bool = False
    multilabel: bool = False
    instances: bool = False
    previews: bool = False
    png_level: int = png.DEFAULT_LEVEL
    format: str = "auto"
    image_dir: Path | None = None
    via_attribute: str | None = None
    crowd: str = "ignore"

    def __post_init__(self) -> None:
        check_choice("images", self.images, IMAGE_MODES)
        if self.png_level not in png.LEVELS:
            raise SegtoolError(f"--png-level {self.png_level} is not one of 0..9")


@dataclass(frozen=True)
class ImportSpec:
    """How `import_masks` turns image and mask folders into a dataset.

    Attributes:
        values: ``"0=_background_,255=membrane"``: grey values (palette indices) -> class
            names; ``__ignore__`` names the ignore value. Default: 0/255 or 0/1 binary masks
            (background / ``foreground``), VOC's table in the VOC layout.
        colors: a colour table for RGB masks (``classes.json`` with colours, or ``R G B name``
            lines).
        names: a names file: line i names mask value i (``__ignore__``: the ignore value).
        labels: a class map fixing the ids; default: background 0, then the table's classes in
            value order (colour tables: in file order); a table without a background has
            none invented (its first class is id 0, scored).
        background_scored: id 0 is a real class that evaluate scores (ISBI's membrane).
        unknown: ``error`` (default) or ``ignore`` for values the table does not name.
        image_mode: ``copy``, ``link`` or ``none``.
        jobs: worker processes; None uses every core.
        skip_invalid: convert the valid pairs and list the others in the report.
        overwrite: replace the output if it exists.
    """

    values: str | None = None
    colors: Path | None = None
    names: Path | None = None
    labels: Path | None = None
    background_scored: bool = False
    unknown: str = "error"
    image_mode: str = "copy"
    jobs: int | None = None
    skip_invalid: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_choice("unknown", self.unknown, UNKNOWN_MODES)
        check_choice("images", self.image_mode, IMAGE_MODES)
        tables = [o for o, v in (("--values", self.values), ("--names", self.names)) if v]
        if len(tables) + (self.colors is not None) > 1:
            raise SegtoolError(
                "pass one class table: --values or --names (grey or palette masks) or --colors "
                "(RGB masks)"
            )


def spec_of(kind: type[Spec], spec: Spec | None, options: dict[str, Any]) -> Spec:
    """`spec` with `options` replacing its fields, or a new `kind` built from `options`.

    Raises:
        TypeError: an option `kind` does not have (as for any unknown keyword argument).
        SegtoolError: a value the spec refuses.
    """
    if spec is None:
        return kind(**options)
    return replace(spec, **options) if options else spec
