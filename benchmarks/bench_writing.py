"""predict's output writers: threads against processes, on the outputs predict writes.

Each round writes the same few hundred 512x512 outputs (a 3-class palette mask PNG and a
JPEG overlay with its legend, as `predict --overlay` writes them) through
`segtool.predict.writing.Writer`, batch by batch as predict submits them, with torch loaded
as in predict (so worker processes are spawned, as there). The time runs from the writer's
creation; the first batch (processes start) is reported apart from the steady rate of the
rest. `PROCESS_CORES` in writing.py is chosen from these figures.

    python benchmarks/bench_writing.py [--images N] [--size S] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: F401  (loaded as in predict: worker processes are spawned)

from segtool.core.classes import make_class_map
from segtool.core.parallel import default_jobs
from segtool.predict.writing import Outputs, Writer, process_jobs

BATCH = 8


def make_outputs(n: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` (picture, labels) pairs: smooth noise pictures and masks of a few blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pairs = []
    for _ in range(n):
        small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        picture = np.kron(small, np.ones((16, 16, 1), np.uint8))
        labels = np.zeros((size, size), np.uint8)
        for value in (1, 2, 1, 2):
            cy, cx = rng.integers(0, size, 2).tolist()
            r = int(rng.integers(size // 16, size // 4))
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = value
        pairs.append((picture, labels))
    return pairs


def write_all(root: Path, pairs: list, jobs: int, processes: bool) -> tuple[float, float]:
    """(start-up, steady) seconds to write every output through a `Writer` of `jobs` threads
    or processes: start-up until the first batch is written, steady for the rest."""
    folder = root / f"{'p' if processes else 't'}{jobs}-{time.monotonic_ns()}"
    folder.mkdir()
    outputs = Outputs(folder, make_class_map(["_background_", "a", "b"]), overlays=True)
    batches = [
        [(Path(f"i{at + i:05d}.jpg"), labels, None, picture)
         for i, (picture, labels) in enumerate(pairs[at : at + BATCH])]
        for at in range(0, len(pairs), BATCH)
    ]  # fmt: skip
    start = time.perf_counter()
    with Writer(outputs, jobs, processes=processes) as writer:
        writer.submit(batches[0])
        writer.wait()
        started = time.perf_counter()
        for batch in batches[1:]:
            writer.submit(batch)
        writer.wait()
    end = time.perf_counter()
    assert len(list(folder.glob("*.png"))) == len(pairs)
    return started - start, end - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time each writer `--rounds` times, in turn; print the best and worst of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cores = default_jobs()
    pairs = make_outputs(args.images, args.size)
    # predict's writers: 2 threads beside a model on the CPU, 4 threads or `process_jobs`
    # processes beside a GPU
    kinds = [("threads", 2, False), ("threads", 4, False), ("processes", process_jobs(cores), True)]
    times: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, jobs, processes in kinds:
                key = f"{jobs} {name}"
                times.setdefault(key, []).append(write_all(Path(tmp), pairs, jobs, processes))
    load = os.getloadavg()[0]
    steady_n = args.images - BATCH
    print(f"{args.images} outputs {args.size}x{args.size} (mask PNG + overlay JPEG), "
          f"{cores} cores, load average {load:.1f}, {args.rounds} rounds:")  # fmt: skip
    base = steady_n / min(s for _, s in times["2 threads"])
    for key, values in times.items():
        rates = [steady_n / s for _, s in values]
        starts = [u for u, _ in values]
        print(f"  {key:12s} steady {min(rates):6.1f}-{max(rates):.1f} outputs/s "
              f"({max(rates) / base:.2f}x 2 threads, best rounds), first batch after "
              f"{min(starts):.2f}-{max(starts):.2f} s")  # fmt: skip
    return {"cores": cores, "times": times}


if __name__ == "__main__":
    main()
