"""``predict --as FORMAT``: each predicted mask also written as polygons (or COCO RLE) that an
annotation tool opens as pre-annotations, through the writers of `segtool.sources.writers`.

labelme gets ``OUT/<stem>.json`` beside each mask, its ``imagePath`` relative to OUT; the
other formats one file in OUT (``coco.json``, ``annotations.xml``, ``via.json``,
``labelstudio.json``) naming each image relative to the images folder (rasterize's
``--image-dir``). Scores are the mean probability of each part's class over its pixels.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core.errors import SegtoolError
from segtool.sources.writers.formats import (
    AnnotationFormat,
    PredictedImage,
    annotation_format,
    shapes_of,
    write_document,
)

if TYPE_CHECKING:
    import numpy as np

    from segtool.core.classes import ClassMap


def check_annotations(name: str, class_map: ClassMap, embed: bool) -> AnnotationFormat:
    """The ``--as`` format for a run's class map, checked before anything is predicted.

    Raises:
        SegtoolError: an unknown format, a multi-label run into a polygon format, or
            ``--embed-images`` for a format that does not hold images.
    """
    fmt = annotation_format(name, class_map.multilabel)
    if embed and fmt.name != "labelme":
        raise SegtoolError(
            f"--embed-images: only labelme files hold their image (imageData); {fmt.name} "
            f"files name it, so drop --embed-images"
        )
    return fmt


def _confidence(labels: np.ndarray, probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """Each pixel's probability of its class (multi-label: each class plane's probability)."""
    import numpy as np

    if multilabel:
        return probs
    return np.take_along_axis(probs, labels[None].astype(np.int64), axis=0)[0]


class AnnotationSink:
    """Collects each image's shapes as the writer threads finish its mask; `finish` writes the
    format's file (labelme files are written as they come)."""

    def __init__(
        self,
        fmt: AnnotationFormat,
        class_map: ClassMap,
        *,
        images: Path,
        out: Path,
        tolerance: float,
        embed: bool,
        version: str,
    ) -> None:
        self.fmt, self.class_map, self.images, self.out = fmt, class_map, images, out
        self.tolerance, self.embed, self.version = tolerance, embed, version
        self.done: dict[Path, PredictedImage] = {}
        self.lock = threading.Lock()

    def add(self, folder: Path, path: Path, labels: np.ndarray, probs: np.ndarray) -> None:
        """One image's prediction (`labels` as predict writes them, `probs` K x H x W) into
        shapes; labelme's file is written into `folder` at once."""
        from segtool.core.multilabel import decode

        multilabel = self.class_map.multilabel
        masks = decode(labels, self.class_map.num_foreground)[0] if multilabel else labels
        shapes = shapes_of(
            self.fmt,
            masks,
            self.class_map.names,
            tolerance=self.tolerance,
            confidence=_confidence(labels, probs, multilabel),
        )
        if self.fmt.file is None:  # labelme: relative to the JSON, which lies in OUT
            reference = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.out)))
        else:
            reference = path.relative_to(self.images)
        item = PredictedImage(
            reference.as_posix(),
            labels.shape[-1],
            labels.shape[-2],
            data=path.read_bytes() if self.embed else None,
            file_size=path.stat().st_size,
            **shapes,
        )
        if self.fmt.file is None:
            (document,) = write_document(self.fmt, [item], self.class_map.names, self.version)
            (folder / f"{path.stem}.json").write_text(json.dumps(document, indent=1))
            return
        with self.lock:
            self.done[path] = item

    def finish(self, folder: Path) -> None:
        """Write the format's one file into `folder`, images in name order."""
        if self.fmt.file is None:
            return
        images = [self.done[path] for path in sorted(self.done)]
        document = write_document(self.fmt, images, self.class_map.names, self.version)
        text = document if isinstance(document, bytes) else json.dumps(document).encode()
        (folder / self.fmt.file).write_bytes(text)


def annotation_sink(predictor: Any, spec: Any, images: Path, out: Path) -> AnnotationSink | None:
    """The sink for `spec`'s ``--as`` (None without it), checked against the `predictor`'s
    class map; its ``model_version`` names segtool's version and the run folder.

    Raises:
        SegtoolError: see `check_annotations`.
    """
    from segtool import __version__

    if spec.annotations is None:
        return None
    fmt = check_annotations(spec.annotations, predictor.class_map, spec.embed_images)
    return AnnotationSink(
        fmt,
        predictor.class_map,
        images=images,
        out=out,
        tolerance=spec.simplify,
        embed=spec.embed_images,
        version=f"segtool {__version__}: {Path(os.path.abspath(predictor.source)).name}",
    )
