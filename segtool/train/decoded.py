"""The decoded cache: every training and validation image decoded (and resized) once.

Decoding a PNG or JPEG costs more than everything else a loader does with it, and a run reads
each image once an epoch; this is the photos' analogue of the volume slice cache
(`segtool.train.volumes`). Each pair is read, checked and brought to the run's geometry
(`--size`, `--resize`) once, in parallel, and kept as uint8 HWC pixels and its mask, with a
`ForegroundIndex` per mask so a crop centred on foreground needs no scan of the mask:

- ``ram``: arrays in this process (DataLoader workers share them, forked, without a copy);
- ``disk``: ``CACHE/decoded-<key>/`` (``images.bin``, ``masks.bin``, ``index.npz``,
  ``meta.json`` written last: an entry without it is incomplete and is rebuilt), memory-mapped.
  The key hashes the pairs' names, sizes and modification times, the geometry, the class
  count and the regions, so a changed file or option makes a new entry and later runs that
  share ``--cache`` reuse an unchanged one.

The plan chooses between them (`choose_decoded`); a sample read from the cache is the
sample read from the files, pixel for pixel (tested through whole training runs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segtool.core.dataset import Pair, files_digest
from segtool.core.files import atomic_path, write_json
from segtool.core.parallel import Workers

#: Bumped when the layout changes (old entries are not reused).
DECODED_VERSION = 1
#: Fewer pairs than this decode in this process (starting workers costs more).
MIN_PARALLEL = 48
#: Pairs that decode to fewer bytes than this decode in this process too: a few seconds on
#: one core, less than starting the workers costs (each loads torch to read the dataset; on
#: a busy machine, tens of seconds of a run's time budget).
PARALLEL_BYTES = 256 * 2**20
#: Byte offsets in the flat files are multiples of this (uint16 masks need even ones).
ALIGN = 8


#: The share of the free RAM the decoded images may take in RAM (else a memory-mapped file).
DECODED_RAM_SHARE = 0.25


def choose_decoded(nbytes: float, free_ram: float, processes: int = 1) -> tuple[str, str]:
    """Where the decoded images are kept, and why: in RAM when they take at most
    `DECODED_RAM_SHARE` of the `free_ram` bytes that each of the machine's `processes`
    (torchrun's, each holding its own copy) has, else in a memory-mapped file."""
    size = f"{nbytes / 2**30:.3g} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"
    each = f" shared by {processes} processes" if processes > 1 else ""
    if nbytes * processes <= DECODED_RAM_SHARE * free_ram:
        return "ram", f"{size}, within {DECODED_RAM_SHARE:.0%} of the free RAM{each}: kept in RAM"
    room = f"{DECODED_RAM_SHARE:.0%} of {free_ram / 2**30:.3g} GB free RAM{each}"
    return "disk", f"{size}, over {room}: a memory-mapped file in the cache folder"


def decoded_bytes(n_images: int, height: int, width: int, mask_bytes: int = 1) -> float:
    """Bytes `n_images` decoded images of `height` x `width` take, RGB and mask."""
    return float(n_images) * height * width * (3 + mask_bytes)


class ForegroundIndex:
    """Where each foreground value of a mask lies, by rows: the values present (sorted; not 0,
    not the ignore value) and, per value, the running count of its pixels row by row. The
    k-th pixel of a value (in row-major order, as ``np.nonzero`` lists them) is found by a
    binary search over the rows and a scan of one row, not of the mask."""

    def __init__(self, values: np.ndarray, rows: np.ndarray) -> None:
        self.values = values  #: (V,) the foreground values present
        self.rows = rows  #: (V, H) int32, pixels of each value in rows 0..r

    @classmethod
    def of(cls, mask: np.ndarray, ignore_index: int) -> ForegroundIndex:
        """The index of `mask` (2-D class ids or bit values)."""
        if mask.dtype in (np.uint8, np.uint16):
            present = np.flatnonzero(np.bincount(mask.ravel(), minlength=1))
        else:
            present = np.unique(mask)
        values = present[(present != 0) & (present != ignore_index)].astype(mask.dtype)
        rows = np.empty((len(values), mask.shape[0]), dtype=np.int32)
        for j, value in enumerate(values):
            np.cumsum(np.count_nonzero(mask == value, axis=1), out=rows[j])
        return cls(values, rows)

    def count(self, j: int) -> int:
        """Pixels of the `j`-th value."""
        return int(self.rows[j, -1])

    def locate(self, mask: np.ndarray, j: int, k: int) -> tuple[int, int]:
        """(row, column) of the `k`-th pixel (from 0) of the `j`-th value in `mask`."""
        row = int(np.searchsorted(self.rows[j], k, side="right"))
        before = int(self.rows[j, row - 1]) if row else 0
        columns = np.flatnonzero(mask[row] == self.values[j])
        return row, int(columns[k - before])


@dataclass(frozen=True)
class Geometry:
    """What a cached pixel depends on besides the files."""

    box: tuple[int, int] | None
    resize: str
    num_classes: int
    multilabel: bool
    ignore_index: int
    regions: str | None

    def key(self, pairs: list[Pair]) -> str:
        """The entry's name: the files' and the geometry's hash."""
        text = f"v{DECODED_VERSION}\0{files_digest(pairs)}\0{self!r}\n"
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _decode(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """One pair as the dataset reads it (checked, at its geometry) and its index."""
    image, mask = dataset.load(index)
    image, mask = dataset.fit_box(image, mask)
    return image, mask, ForegroundIndex.of(mask, dataset.class_map.ignore_index)


class DecodedCache:
    """Decoded pairs by stem: `item(stem)` -> (image HWC uint8, mask, `ForegroundIndex`),
    read-only views (of RAM arrays, or of the memory-mapped entry)."""

    def __init__(self, geometry: Geometry, stems: list[str], folder: Path | None = None) -> None:
        self.geometry, self.folder = geometry, folder
        self.slot = {stem: i for i, stem in enumerate(stems)}
        self.items: list[tuple[np.ndarray, np.ndarray, ForegroundIndex]] = []

    @property
    def where(self) -> str:
        """``ram`` or ``disk``."""
        return "ram" if self.folder is None else "disk"

    def item(self, stem: str) -> tuple[np.ndarray, np.ndarray, ForegroundIndex]:
        """The decoded image, mask and foreground index of `stem`."""
        if not self.items and self.folder is not None:
            self._open()  # a worker that got this cache pickled opens the entry itself
        return self.items[self.slot[stem]]

    def nbytes(self) -> int:
        """Bytes of pixels and masks held."""
        return sum(image.nbytes + mask.nbytes for image, mask, _ in self.items)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.folder is not None:  # the file travels by name, not as a copy of its bytes
            state["items"] = []
        return state

    def _open(self) -> None:
        meta = json.loads((self.folder / "meta.json").read_text())
        images = np.memmap(self.folder / "images.bin", dtype=np.uint8, mode="r")
        masks = np.memmap(self.folder / "masks.bin", dtype=np.uint8, mode="r")
        with np.load(self.folder / "index.npz") as saved:
            index = {name: saved[name] for name in saved.files}
        items = []
        for i, entry in enumerate(meta["items"]):
            shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
            start = entry["image"]
            image = images[start : start + shape[0] * shape[1] * 3].reshape(*shape, 3)
            start, size = entry["mask"], shape[0] * shape[1] * dtype.itemsize
            mask = masks[start : start + size].view(dtype).reshape(shape)
            first, last = index["value_start"][i], index["value_start"][i + 1]
            values = index["values"][first:last].astype(dtype)
            rows = index["rows"][index["row_start"][i] : index["row_start"][i + 1]]
            items.append((image, mask, ForegroundIndex(values, rows.reshape(len(values), -1))))
        self.items = items


def _aligned(fh: Any, array: np.ndarray) -> int:
    """Write `array`'s bytes at the next aligned offset of `fh`; return the offset."""
    offset = -(-fh.tell() // ALIGN) * ALIGN
    fh.write(b"\0" * (offset - fh.tell()))
    fh.write(np.ascontiguousarray(array).tobytes())
    return offset


def _write_entry(folder: Path, decoded: Any, stems: list[str]) -> None:
    """Stream the decoded pairs into the entry's files, meta.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, values, rows, value_start, row_start = [], [], [], [0], [0]
    with (
        atomic_path(folder / "images.bin") as image_tmp,
        atomic_path(folder / "masks.bin") as mask_tmp,
        image_tmp.open("wb") as images,
        mask_tmp.open("wb") as masks,
    ):
        for image, mask, fg in decoded:
            entries.append({
                "shape": list(mask.shape), "dtype": mask.dtype.str,
                "image": _aligned(images, image), "mask": _aligned(masks, mask),
            })  # fmt: skip
            values.append(fg.values.astype(np.int64))
            rows.append(fg.rows.ravel())
            value_start.append(value_start[-1] + len(fg.values))
            row_start.append(row_start[-1] + fg.rows.size)
    with atomic_path(folder / "index.npz") as tmp, tmp.open("wb") as fh:
        np.savez(
            fh,
            values=np.concatenate(values or [np.zeros(0, np.int64)]),
            rows=np.concatenate(rows or [np.zeros(0, np.int32)]).astype(np.int32),
            value_start=np.array(value_start, dtype=np.int64),
            row_start=np.array(row_start, dtype=np.int64),
        )
    write_json(folder / "meta.json", {"version": DECODED_VERSION, "stems": stems, "items": entries})


def decode_pairs(
    dataset: Any,
    where: str,
    cache_dir: Path | None = None,
    *,
    build: bool = True,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DecodedCache:
    """Decode every pair of `dataset` once (in parallel), in RAM or into ``cache_dir``.

    Args:
        dataset: a `data.SegmentationDataset`: the pairs and how they are read (the geometry,
            class map and regions).
        where: ``ram`` or ``disk``.
        cache_dir: the cache folder of a ``disk`` cache.
        build: False: open the entry another process built (it must be complete).
        jobs: decoding processes (None: every core, none for a few pairs).
        on_progress: called as ``(done, total)``.

    Raises:
        SegtoolError: a pair fails its checks (as reading it for training would).
    """
    geometry = dataset.geometry()
    stems = [p.stem for p in dataset.pairs]
    folder = None
    if where == "disk":
        folder = Path(cache_dir) / f"decoded-{geometry.key(dataset.pairs)}"
    cache = DecodedCache(geometry, stems, folder)
    if (folder is not None and (folder / "meta.json").is_file()) or not build:
        cache._open()
        return cache
    plain = dataset.without_cache()
    with Workers(jobs, min_items=MIN_PARALLEL) as workers:
        decoded = workers.imap(partial(_decode, plain), range(len(stems)))
        if on_progress is not None:
            decoded = _counted(decoded, len(stems), on_progress)
        if folder is None:
            cache.items = list(decoded)
            for image, mask, _ in cache.items:  # a transform must not change the cache
                image.setflags(write=False)
                mask.setflags(write=False)
        else:
            _write_entry(folder, decoded, stems)
            cache._open()
    return cache


def _counted(items: Any, total: int, on_progress: Callable[[int, int], None]) -> Any:
    for done, item in enumerate(items, 1):
        on_progress(done, total)
        yield item
