"""predict's outputs, written into the folder the output plan builds beside OUT: each batch's
masks, probabilities and overlays encoded by a pool of worker threads, or processes where
that was measured to pay (`use_processes`), with at most `IN_FLIGHT` batches submitted and
not yet written, so a slow disk slows the model down instead of filling memory.

A worker's error (a full disk, a damaged class map) is raised in predict's own process when
its batch is collected, and the output plan then removes the unfinished folder: OUT appears
complete or not at all. Free of torch, so a worker process starts without loading it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segtool.core.classes import ClassMap
from segtool.core.constants import MASK_SUFFIX
from segtool.core.legend import class_entries, present_ids, with_legend
from segtool.core.masks import write_mask
from segtool.core.multilabel import preview, write_multilabel_mask
from segtool.core.parallel import Workers

if TYPE_CHECKING:
    from PIL import Image

    from segtool.predict.annotations import AnnotationSink

#: The most batches of outputs submitted to the writers and not yet written: the model waits
#: for the oldest beyond this, so memory holds at most this many batches of outputs.
IN_FLIGHT = 4
#: Writer processes from this many cores on. Measured on 2 cores (`benchmarks/bench_writing.py`,
#: 300 masks and overlays of 512x512): processes wrote 0.65x as fast as threads, pickling each
#: picture and mask across, and took 7-9 s to start under load; 4 threads wrote 1.1x as fast
#: as 2 (PNG and JPEG encoding release the GIL). Not measured past 2 cores: on a GPU machine
#: `benchmarks/gpu_check.py` prints the comparison on its cores, to move this threshold by.
PROCESS_CORES = 8

#: One image's outputs: the image file, its labels, its probabilities (or None), its picture
#: (or None when no overlay is written).
Item = tuple[Path, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def overlay(
    image: np.ndarray, labels: np.ndarray, class_map: ClassMap, alpha: float = 0.5
) -> Image.Image:
    """The image with each foreground class painted in its colour (multi-label masks: the
    colours of the classes present, blended)."""
    from PIL import Image

    if class_map.multilabel:
        colours = preview(labels, class_map.num_foreground, class_map.colors)
        fg = labels != 0
    else:
        colours = class_map.colorize(labels)
        fg = (labels > 0) & (labels != class_map.ignore_index)
    out = image.astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return Image.fromarray(out.astype(np.uint8))


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, class_map: ClassMap) -> Image.Image:
    """`overlay` with a legend below it: the name and colour of each class painted."""
    painted = present_ids(class_map, labels, background=False)
    return with_legend(overlay(image, labels, class_map), class_entries(class_map, painted))


@dataclass(frozen=True)
class Outputs:
    """What predict writes for each image, and into which folder."""

    folder: Path
    class_map: ClassMap
    overlays: bool = False
    probabilities: bool = False

    def save(self, item: Item) -> None:
        """Write one image's mask, and its probabilities and overlay where asked."""
        path, labels, probs, image = item
        stem = path.stem
        target = self.folder / f"{stem}{MASK_SUFFIX}"
        if self.class_map.multilabel:
            write_multilabel_mask(target, labels, atomic=False)
        else:
            write_mask(target, labels, self.class_map, atomic=False)
        if self.probabilities:
            np.savez_compressed(self.folder / f"{stem}.npz", probs=probs.astype(np.float16))
        if self.overlays:
            picture = overlay_with_legend(image, labels, self.class_map)
            picture.save(self.folder / "overlays" / f"{stem}.jpg", quality=90)


def save_batch(outputs: Outputs, batch: list[Item], sink: AnnotationSink | None = None) -> None:
    """A worker's task: every image of one batch written (and added to `sink`, in threads)."""
    for item in batch:
        outputs.save(item)
        if sink is not None:
            sink.add(outputs.folder, item[0], item[1], item[2])


def process_jobs(cores: int) -> int:
    """Writer processes on a machine of `cores` cores: half of them (the readers and the
    model's own thread take the rest), 2 to 8."""
    return max(2, min(8, cores // 2))


def use_processes(cores: int, annotations: bool) -> bool:
    """Whether the writers are processes: from `PROCESS_CORES` cores on, and not while
    writing annotations (their documents are gathered in this process)."""
    return cores >= PROCESS_CORES and not annotations


class Writer:
    """Writes each batch's outputs in `jobs` worker threads or processes, at most `IN_FLIGHT`
    batches in flight (`submit` waits for the oldest beyond that)."""

    def __init__(
        self,
        outputs: Outputs,
        jobs: int,
        *,
        processes: bool = False,
        annotations: AnnotationSink | None = None,
    ) -> None:
        if processes and annotations is not None:
            raise ValueError("annotations are gathered in this process: write them in threads")
        self.outputs = outputs
        self.annotations = annotations
        self.pool: Workers | ThreadPoolExecutor = (
            Workers(jobs) if processes else ThreadPoolExecutor(max_workers=jobs)
        )
        self.pending: deque[Future] = deque()
        if outputs.overlays:
            (outputs.folder / "overlays").mkdir()

    def submit(self, batch: list[Item]) -> None:
        """Queue one batch's outputs, once fewer than `IN_FLIGHT` batches are in flight
        (re-raising a finished batch's error)."""
        while len(self.pending) >= IN_FLIGHT:
            self.pending.popleft().result()
        # No sink with processes (__init__ refuses one): they get None, pickled across.
        self.pending.append(self.pool.submit(save_batch, self.outputs, batch, self.annotations))

    def wait(self) -> None:
        """Block until every batch is written (re-raising the first error)."""
        while self.pending:
            self.pending.popleft().result()

    def close(self, *, now: bool = False) -> None:
        """Stop the workers: after their tasks, or (`now`, after an error) without the
        batches not yet started; either way none is writing when this returns."""
        for future in self.pending if now else ():
            future.cancel()
        if isinstance(self.pool, Workers):
            self.pool.close(now=now)
        else:
            self.pool.shutdown(wait=True, cancel_futures=now)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(now=kind is not None)
