"""What evaluate reads from a run folder's ``config.json``, in one place.

The model, class map and split are loaded with the predictor (`segtool.predict.predictor`);
this is the rest: the training options, the dataset the run was trained on and, for a run
trained on a volume folder, its volume settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segtool.train.model import has_model
from segtool.train.runfolder import RunFolder


@dataclass(frozen=True)
class RunRecord:
    """A run's ``config.json`` as evaluate needs it (all empty for a bare model folder)."""

    #: the training options (``regions``, ...)
    options: dict = field(default_factory=dict)
    #: the dataset folder the run was trained on
    dataset: Path | None = None
    #: what a run trained on volumes recorded (channels, axis, standardisation); None: images
    volumes: dict | None = None


def read_run(run: Path) -> RunRecord:
    """The run's ``config.json`` (through `RunFolder`, its one reader), or an empty record
    for a bare model folder.

    Raises:
        SegtoolError: an unreadable or invalid config.json.
    """
    folder = RunFolder(run)
    if not folder.model_dir.is_dir() and has_model(run, weights=True):
        return RunRecord()  # a bare model folder: its config.json is the model's own
    return RunRecord(folder.options(), folder.dataset(), folder.volume_settings())
