"""What rasterize reports: shapes, pixels and objects per class, overlaps, skipped files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from segtool.core.classes import ClassMap
from segtool.core.constants import IGNORE_LABEL


@dataclass
class RasterizeReport:
    """What `rasterize_dir` did: the class map, per-class counts, skipped files, warnings."""

    out: Path
    class_map: ClassMap
    class_map_source: str
    n_images: int = 0
    shapes: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)  # pixel value -> pixels
    objects: Counter | None = None  # label -> objects, when instance masks were written
    skipped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: images per split of the official split kept (one export per split folder), else None
    split: dict[str, int] | None = None

    def to_json(self) -> dict:
        """The ``rasterize_report.json`` document."""
        total = sum(self.pixels.values()) or 1
        cmap = self.class_map
        if cmap.multilabel:
            pixels, overlaps, ignored = _bit_counts(self.pixels, cmap)
        else:
            pixels, ignored = self.pixels, self.pixels.get(cmap.ignore_index, 0)
        classes = {}
        for i, name in enumerate(cmap.names):
            row = {
                "id": i,
                "shapes": int(self.shapes.get(name, 0)),
                "pixels": int(pixels.get(i, 0)),
                "pixel_share": pixels.get(i, 0) / total,
            }
            if self.objects is not None:
                row["objects"] = int(self.objects.get(name, 0))
            classes[name] = row
        doc = {
            "n_images": self.n_images,
            "class_map_source": self.class_map_source,
            "classes": classes,
            "ignore": {
                "value": cmap.ignore_index,
                "shapes": int(self.shapes.get(IGNORE_LABEL, 0)),
                "pixels": int(ignored),
            },
            "skipped": self.skipped,
            "warnings": self.warnings,
            "split": self.split,
        }
        if cmap.multilabel:
            doc["multilabel"] = True
            doc["overlaps"] = [
                {"classes": [cmap.names[a], cmap.names[b]], "pixels": int(n)}
                for (a, b), n in sorted(overlaps.items())
            ]
        return doc


def _bit_counts(histogram: Counter, class_map: ClassMap) -> tuple[Counter, Counter, int]:
    """From a histogram of bit values: pixels per class id (0: no class), pixels per class pair
    (a < b) holding both, and ignore pixels."""
    pixels, pairs, ignored = Counter(), Counter(), 0
    for value, n in histogram.items():
        if value & class_map.ignore_index:
            ignored += n
        ids = [bit + 1 for bit in range(class_map.num_foreground) if value >> bit & 1]
        pixels.update(dict.fromkeys(ids or [0], n))
        pairs.update(dict.fromkeys(combinations(ids, 2), n))
    return pixels, pairs, ignored


@dataclass
class Tally:
    """The workers' records added up as they arrive: a folder of 20,000 files keeps these
    sums and its bad files, not 20,000 records, so memory stays flat as the folder grows."""

    total: int = 0
    bad: list = field(default_factory=list)  #: the records of the files with a problem
    n_images: int = 0
    shapes: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    objects: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    outside: Counter = field(default_factory=Counter)  #: file stem -> shapes reaching outside
    labels: set[str] = field(default_factory=set)  #: every label of the valid files
    folders: set[Path] = field(default_factory=set)  #: the folders of the images read

    def add(self, result) -> None:
        """Count one `FileResult`."""
        self.total += 1
        if result.image is not None:
            self.folders.add(result.image.parent)
        if result.problem:
            self.bad.append(result)
            return
        self.n_images += 1
        self.labels.update(result.labels)
        self.shapes.update(result.shapes)
        self.pixels.update(result.pixels)
        self.objects.update(result.objects)
        self.warnings.extend(result.warnings)
        if result.outside:
            self.outside[result.path.stem] = result.outside


def make_report(
    tally: Tally, out: Path, class_map: ClassMap, source: str, instances: bool
) -> RasterizeReport:
    """The report of what the workers found (their `Tally`): counts per class, skipped
    files, warnings."""
    report = RasterizeReport(out=out, class_map=class_map, class_map_source=source)
    report.objects = tally.objects if instances else None
    report.skipped = [{"file": str(r.path), "reason": r.problem} for r in tally.bad]
    report.n_images = tally.n_images
    report.shapes, report.pixels = tally.shapes, tally.pixels
    report.warnings = list(tally.warnings)
    outside = tally.outside
    if outside:
        report.warnings.append(
            f"{sum(outside.values())} shape(s) in {len(outside)} file(s) reach outside their "
            f"image and were clipped to it (as labelme does): "
            + ", ".join(f"{stem} ({n})" for stem, n in sorted(outside.items())[:5])
            + (", ..." if len(outside) > 5 else "")
        )
    return report
