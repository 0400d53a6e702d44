"""predict's reader keeps the model fed: a stand-in engine that takes a fixed time per batch
(sleeping, as a GPU's forward leaves the host's cores to the readers) finds, after the first
batches, every image of its next batch already read each time it asks.

Readiness is counted, not timed: the readers mark each image they have read in shared memory,
and at the end of each batch the stand-in checks that every image of the next batch (the
loader's batch order) is marked. No assertion reads a clock.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
from PIL import Image

import segtool.predict.folder as folder_module
import segtool.predict.reading as reading
from segtool.predict.folder import predict_dir
from tests.test_predict_labels import folder  # noqa: F401  (the fixture's model)

IMAGES, BATCH, WARM_UP = 24, 2, 2
#: The stand-in engine's time per batch, wall time; nothing asserts on it.
BATCH_SECONDS = 0.05


@pytest.mark.parametrize(("workers", "fed"), [(2, True), (0, False)])
def test_the_next_batch_is_read_before_the_engine_asks(folder, tmp_path, monkeypatch, workers, fed):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    for i in range(IMAGES):
        Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(images / f"i{i:02d}.png")
    read = multiprocessing.RawArray("b", IMAGES)  # made before the readers fork
    load = reading.load_rgb

    def marked(path):
        image = load(path)
        read[int(path.stem[1:])] = 1
        return image

    monkeypatch.setattr(reading, "load_rgb", marked)
    loaders, asks = [], []
    make = reading.image_loader

    def recorded(*args, **kwargs):
        loaders.append(make(*args, **kwargs))
        return loaders[-1]

    def stand_in(engine, inputs, keep):
        time.sleep(BATCH_SECONDS)
        order = list(loaders[0].batch_sampler)
        following = order[len(asks) + 1] if len(asks) + 1 < len(order) else []
        asks.append(all(read[i] for i in following))
        return [np.zeros(x.shape[1:], np.uint8) for x in inputs]

    monkeypatch.setattr(folder_module, "image_loader", recorded)
    monkeypatch.setattr(folder_module, "predicted", stand_in)
    predict_dir(folder / "multi", images, tmp_path / "out", device="cpu", batch_size=BATCH,
                workers=workers)  # fmt: skip
    assert len(asks) == IMAGES // BATCH
    assert all(asks[WARM_UP:]) is fed  # read in the main thread (0 workers), never ahead
