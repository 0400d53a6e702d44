"""The run folder, owned here: the one reader and writer of every document a run holds
(config.json with its options, plan, fingerprints and volume settings; classes.json;
split.json; thresholds.json; postprocess.json; metrics.csv and curves.png through
`curves`) and the places of its model and checkpoint; and the run folder as an output (new,
replaced or resumed).

Every other module asks a `RunFolder`; a damaged document is one line naming the file and
the fix.
"""

from __future__ import annotations

import platform
import shutil
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segtool.core.classes import ClassMap, read_classes_json
from segtool.core.constants import CLASSES_FILE, IMAGES_DIR, MASKS_DIR, SPLIT_FILE
from segtool.core.dataset import Pair, files_digest, read_split, split_pairs
from segtool.core.errors import SegtoolError
from segtool.core.files import (
    DiskFullError,
    OutputPlan,
    check_overwrite,
    read_json,
    remove,
    write_json,
)
from segtool.core.postprocess import Rule
from segtool.train import curves

if TYPE_CHECKING:
    from torch import nn

    from segtool.train.config import TrainConfig

#: The run's own record of how it was trained (not the model folder's config.json, which is
#: segmentation-models-pytorch's and read by `train.model`).
CONFIG_FILE = "config.json"
#: Where the checkpoint that --resume continues from lives inside a run folder.
LAST_CHECKPOINT = Path("checkpoints", "last.pt")
#: The best model's folder inside a run folder.
MODEL_DIR = "model"
#: Multi-label runs: the per-class cuts tuned on the validation split.
THRESHOLDS_FILE = "thresholds.json"
#: The post-processing chosen on the validation split (per class, a rule or none).
POSTPROCESS_FILE = "postprocess.json"
METRICS_FILE, CURVES_FILE = "metrics.csv", "curves.png"
#: A run's disk use at its peak, in multiples of its model's weights: ``last.pt`` (the weights
#: and AdamW's two moments) and the best model, while a new ``last.pt`` is written beside the
#: old one (3 + 3 + 1).
PEAK_WEIGHTS = 7
#: Room for the rest of a run folder (metrics, curves, config and records).
RUN_EXTRA_BYTES = 16 * 2**20
#: The fix every damaged run document names.
FIX = "restore it, or train the run again (--overwrite)"


def package_versions() -> dict[str, str]:
    """Versions of segtool and the libraries that decide its numbers."""
    versions = {"python": platform.python_version()}
    for name in (
        "segtool",
        "torch",
        "torchvision",
        "segmentation-models-pytorch",
        "albumentations",
        "numpy",
        "opencv-python-headless",
        "pillow",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class RunFolder:
    """A run folder written by `segtool train`: what it holds, read and written here alone.

    Reading is lazy and each document is read once; a folder without ``config.json`` (a run
    from elsewhere, or only a model) reads as having no options, no plan and no dataset.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # Places -----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        """``config.json``: options, plan, dataset fingerprints, volume settings."""
        return self.path / CONFIG_FILE

    @property
    def classes_file(self) -> Path:
        """``classes.json``: the class map the model was trained with."""
        return self.path / CLASSES_FILE

    @property
    def split_file(self) -> Path:
        """``split.json``: the split the run was trained with."""
        return self.path / SPLIT_FILE

    @property
    def thresholds_file(self) -> Path:
        """``thresholds.json``: a multi-label run's tuned cuts."""
        return self.path / THRESHOLDS_FILE

    @property
    def postprocess_file(self) -> Path:
        """``postprocess.json``: the post-processing chosen on the validation split."""
        return self.path / POSTPROCESS_FILE

    @property
    def model_dir(self) -> Path:
        """``model/``: the best model (segmentation-models-pytorch's format)."""
        return self.path / MODEL_DIR

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.pt``: what --resume continues from."""
        return self.path / LAST_CHECKPOINT

    # Reading ----------------------------------------------------------------------------
    @cached_property
    def document(self) -> dict[str, Any]:
        """``config.json`` as written by `write_records` (empty when there is none).

        Raises:
            SegtoolError: unreadable, or not a run's config (no ``options`` object).
        """
        path = self.config_file
        if not path.is_file():
            return {}
        doc = read_json(path, "run config.json", FIX)
        if not isinstance(doc, dict) or not isinstance(doc.get("options"), dict):
            raise SegtoolError(f'{path}: no "options" object, so not a run\'s config.json; {FIX}')
        return doc

    def options(self) -> dict[str, Any]:
        """The training options as recorded (``TrainConfig`` fields; empty without a config)."""
        return dict(self.document.get("options", {}))

    def config(self) -> TrainConfig | None:
        """The training options as a `TrainConfig` (None without a config.json).

        Raises:
            SegtoolError: a recorded option that does not parse.
        """
        from segtool.train.config import TrainConfig

        if not self.document:
            return None
        try:
            return TrainConfig.from_json(self.document["options"])
        except (SegtoolError, TypeError, ValueError) as exc:
            raise SegtoolError(f"{self.config_file}: {exc}; {FIX}") from exc

    def volume_settings(self) -> dict[str, Any] | None:
        """What a run trained on volumes recorded (channels, axis, standardisation), or None
        for a run trained on photos."""
        return self.document.get("volumes")

    def dataset(self) -> Path | None:
        """The dataset folder the run was trained on (None when not recorded)."""
        dataset = self.document.get("dataset")
        return Path(dataset) if isinstance(dataset, str) else None

    def dataset_files(self) -> str | None:
        """The names-and-sizes digest of the files the split names, which --resume compares."""
        return self.document.get("dataset_files")

    def plan(self) -> dict[str, Any] | None:
        """The plan the run was made with (choices, fingerprint, machine), if it was planned."""
        return self.document.get("plan")

    def class_map(self) -> ClassMap:
        """The class map the run was trained with.

        Raises:
            SegtoolError: there is none, or it is damaged.
        """
        if not self.classes_file.is_file():
            raise SegtoolError(f"{self.classes_file}: the run has no class map; {FIX}")
        return read_classes_json(self.classes_file)

    def split(self, stems: set[str] | None = None, *, required: bool = False) -> dict | None:
        """The run's split (checked against `stems` when given), or None without one.

        Raises:
            SegtoolError: a damaged split, or (`required`) none.
        """
        if not self.split_file.is_file():
            if required:
                raise SegtoolError(f"{self.split_file}: the run has no split; {FIX}")
            return None
        return read_split(self.split_file, stems)

    def _by_class(
        self, path: Path, key: str, class_map: ClassMap, fix: str, every: bool
    ) -> dict[str, Any] | None:
        """The `key` object of a per-class document (`every`: each foreground class in it),
        or None without the file.

        Raises:
            SegtoolError: unreadable, or names that are not the class map's."""
        if not path.is_file():
            return None
        doc = read_json(path, f"{key} file", fix)
        entries = doc.get(key) if isinstance(doc, dict) else None
        names = list(class_map.names[1:])
        fits = isinstance(entries, dict) and set(entries) <= set(names)
        if not fits or (every and len(entries) != len(names)):  # type: ignore[arg-type]
            raise SegtoolError(f"{path}: {key} for {entries!r:.80} do not match classes {names}")
        return entries

    def thresholds(self, class_map: ClassMap) -> dict[str, float] | None:
        """A multi-label run's tuned cut per foreground class name, or None without them.

        Raises:
            SegtoolError: unreadable file, or classes or values that do not fit the class map.
        """
        fix = "delete it (predict then cuts at 0.5)"
        cuts = self._by_class(self.thresholds_file, "thresholds", class_map, fix, every=True)
        if cuts is None:
            return None
        if not all(isinstance(v, (int, float)) and 0 < v < 1 for v in cuts.values()):
            raise SegtoolError(
                f"{self.thresholds_file}: thresholds must lie between 0 and 1; {fix}"
            )
        return {name: float(cuts[name]) for name in class_map.names[1:]}

    def postprocess(self, class_map: ClassMap) -> dict[str, Rule] | None:
        """The post-processing rule by class name (what predict applies and an export
        carries), or None when none was chosen.

        Raises:
            SegtoolError: unreadable file, classes or rules that do not fit the class map.
        """
        fix = "delete it (predict then applies none) or choose again"
        rules = self._by_class(self.postprocess_file, "rules", class_map, fix, every=False)
        if rules is None:
            return None
        try:
            return {name: Rule.from_json(rule) for name, rule in rules.items()}
        except SegtoolError as exc:
            raise SegtoolError(f"{self.postprocess_file}: {exc}; {fix}") from exc

    def metrics(self) -> list[dict[str, str]]:
        """The rows of metrics.csv (empty if there is none)."""
        return curves.read_metrics(self.path / METRICS_FILE)

    def check_same_dataset(self, dataset: Path, pairs: list[Pair], split: dict) -> None:
        """Refuse to resume on a dataset other than the run's (file names and sizes compared).

        Raises:
            SegtoolError: naming the dataset the run was trained on and what to do.
        """
        recorded = self.dataset_files()
        used = split_pairs(pairs, split)
        if recorded is None or recorded == files_digest(used, times=False):
            return
        extra = sorted({p.stem for p in pairs} - {p.stem for p in used})
        hint = f"; {len(extra)} image(s) not in the run's split, e.g. {extra[0]}" if extra else ""
        raise SegtoolError(
            f"--resume: {dataset} is not the dataset {self.path} was trained on "
            f"({self.dataset()}): file names or sizes differ{hint}; resume on the run's own "
            f"dataset, or start a new run (--overwrite or another --out)"
        )

    # Writing ----------------------------------------------------------------------------
    def write_progress(self, rows: list[dict[str, Any]], draw: bool = True) -> None:
        """metrics.csv and (with `draw`) curves.png from every epoch's row."""
        curves.write_metrics(self.path / METRICS_FILE, rows)
        if draw:
            curves.draw_curves(self.path / CURVES_FILE, rows)

    def write_thresholds(self, doc: dict[str, Any] | None) -> None:
        """Write the tuned thresholds, or (None) remove stale ones."""
        if doc is None:
            remove(self.thresholds_file)
        else:
            write_json(self.thresholds_file, doc)

    def save_best(self, model: nn.Module) -> None:
        """Save a new best model; the post-processing chosen for the one it replaces goes."""
        from segtool.train.model import save_model

        save_model(model, self.model_dir)
        self.write_postprocess(None)

    def write_postprocess(self, doc: dict[str, Any] | None) -> None:
        """Write the post-processing chosen on the validation split, or (None) remove a
        stale one (it belongs to the best model it was chosen for)."""
        if doc is None:
            remove(self.postprocess_file)
        else:
            write_json(self.postprocess_file, doc)

    def write_records(
        self,
        config: TrainConfig,
        class_map: ClassMap,
        split: dict,
        facts: dict[str, Any],
        plan: dict[str, Any] | None,
    ) -> None:
        """classes.json, split.json and config.json: the options, then `facts` (what the
        run was trained on and how: dataset, fingerprints, for a volume folder its channels,
        slice axis and standardisation, which predict reads; device, counts), the library
        versions and the plan that chose the options."""
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        class_map.save(self.classes_file)
        write_json(self.split_file, split)
        doc = {"options": config.to_json(), **facts, "versions": package_versions(), "plan": plan}
        write_json(self.config_file, doc)
        self.__dict__["document"] = doc


# The run folder as an output -----------------------------------------------------------
def check_run_output(
    out: Path, dataset: Path, split_file: str | None, resume: bool, overwrite: bool
) -> OutputPlan | None:
    """The run folder as this command's output, checked against its inputs (the dataset).

    Returns:
        The plan: a new (or --overwrite'd) run is built beside `out` and moved in at the end;
        None on --resume, where the run is continued in place, each file written atomically.

    Raises:
        SegtoolError: `out` is, contains or lies inside the dataset, exists without --resume
            or --overwrite, or (with --resume) holds no run.
    """
    plan = OutputPlan(overwrite=overwrite or resume)
    plan.read("the dataset's images", dataset / IMAGES_DIR)
    plan.read("the dataset's masks", dataset / MASKS_DIR)
    plan.read("the dataset", dataset)
    plan.read("the split file", Path(split_file) if split_file else None)
    plan.write(out, folder=True, option="--out")
    if not out.is_symlink():  # a link is refused by the plan's own check
        check_overwrite(out, overwrite or resume, alternative="resume to continue it")
    plan.check()
    if resume:
        if not out.is_dir():
            raise SegtoolError(f"{out}: no such run to resume; drop --resume to start it")
        return None
    return plan


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def check_room(run_dir: Path, model: nn.Module, shown: Path) -> None:
    """Refuse, before the first epoch, a run whose checkpoints will not fit on its disk.

    Args:
        run_dir: where the run is written (a resumed run's ``last.pt`` and best model there
            are replaced as it goes, so their space counts as free).
        model: the model (its weights set the size of every checkpoint).
        shown: the run folder to name in the message (the user's ``--out``).

    Raises:
        DiskFullError: the disk has less free space than the run's peak use.
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    held = _size(run_dir / LAST_CHECKPOINT) + _size(run_dir / MODEL_DIR)
    need = PEAK_WEIGHTS * weights + RUN_EXTRA_BYTES - held
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise DiskFullError(
            f"{shown}: {free / 2**20:.0f} MB free on its disk, but this run needs about "
            f"{need / 2**20:.0f} MB (last.pt with the optimizer's state and the best model, and "
            f"each new last.pt written beside the old one); free space, or pass --out on a disk "
            f"with room"
        )


def publish_run(plan: OutputPlan | None, run_dir: Path, *, keep: bool) -> bool:
    """Move the new run into place when `keep` and it holds a checkpoint, else drop it.

    Returns:
        Whether `out` now holds this run (always, when resuming in place).
    """
    if plan is None:
        return True
    if keep and (run_dir / LAST_CHECKPOINT).is_file():
        plan.commit()
        return True
    plan.discard()
    return False
