"""Choosing a run's config: the checkpoint's own on --resume; else, for a new run, measure
the dataset and the machine, choose (`plan.plan_training`; a volume folder's:
`volume_plan.plan_volumes`) and probe the GPU for the batch size of images, then plan again
for the probed batch (the epochs, their steps and the validation interval follow from it). A
time budget is fitted later, from the run's own first steps (`Trainer.fit_budget`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segtool.core.classes import ClassMap, mode_for, read_classes_json
from segtool.core.constants import CLASSES_FILE
from segtool.core.dataset import check_dataset_folder, find_pairs
from segtool.core.errors import SegtoolError
from segtool.core.multilabel import mask_bits
from segtool.core.parallel import ProgressFn
from segtool.core.regions import Regions, parse_regions
from segtool.sources.volume_folder import is_volume_folder, read_volume_dataset
from segtool.train.choices import Choice, Plan
from segtool.train.config import Given, TrainConfig, resume_config
from segtool.train.data import resolve_split
from segtool.train.distributed import Dist
from segtool.train.fingerprint import Fingerprint, Machine, measure_dataset, measure_machine
from segtool.train.geometry import STRIDE
from segtool.train.plan import plan_training
from segtool.train.runfolder import RunFolder
from segtool.train.volume_plan import VolumeFingerprint, measure_volumes, plan_volumes

#: Batch sizes the GPU probe tries, largest last.
PROBE_BATCHES = (8, 16, 32, 64)
#: The share of GPU memory a probed batch may use (the rest is headroom).
GPU_HEADROOM = 0.7


@dataclass
class Planned:
    """A new run's config, and the plan record written into config.json."""

    config: TrainConfig
    plan: Plan
    fingerprint: Fingerprint | VolumeFingerprint
    machine: Machine

    @property
    def fits_first_steps(self) -> bool:
        """Whether a time budget fits this plan from the run's first steps (images); a volume
        folder's epochs are re-fitted as its epochs are measured."""
        return isinstance(self.fingerprint, Fingerprint)

    def record(self) -> dict[str, Any]:
        """The plan as config.json's ``plan``."""
        return {
            "choices": self.plan.to_json(),
            "fingerprint": self.fingerprint.to_json(),
            "machine": self.machine.to_json(),
        }


def probe_batch_size(config: TrainConfig, class_map: ClassMap, fp: Fingerprint, limit: int) -> int:
    """The largest of `PROBE_BATCHES` (at most `limit`) whose training step fits in
    `GPU_HEADROOM` of the GPU's memory, tried on random input of the planned size (the first
    when even that does not fit: training then says so itself)."""
    from segtool.core.device import amp_dtype_for, autocast
    from segtool.train.losses import build_loss
    from segtool.train.model import build_model

    device = torch.device("cuda")
    box = config.size or ((config.crop,) * 2 if config.crop else fp.largest_size)
    height, width = (-(-side // STRIDE) * STRIDE for side in box)
    model = build_model(
        config.arch, config.encoder, config.encoder_weights, class_map.num_classes,
        decoder_channels=config.decoder_channels,
    ).to(device)  # fmt: skip
    mode = mode_for(class_map.num_classes, class_map.multilabel)
    loss_fn = build_loss(config.loss, mode, class_map.ignore_index)
    dtype = amp_dtype_for(device, config.amp)
    total = torch.cuda.get_device_properties(device).total_memory
    best = PROBE_BATCHES[0]
    for batch in (b for b in PROBE_BATCHES if b <= limit):
        torch.cuda.reset_peak_memory_stats(device)
        try:
            x = torch.randn(batch, 3, height, width, device=device)
            y = torch.zeros(batch, height, width, dtype=torch.int64, device=device)
            with autocast(device, dtype):
                loss = loss_fn(model(x), y)
            loss.backward()
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
        if torch.cuda.max_memory_allocated(device) > GPU_HEADROOM * total:
            break
        best = batch
    del model
    torch.cuda.empty_cache()
    return best


def plan_new_run(
    dataset: Path,
    class_map: ClassMap,
    regions: Regions | None,
    given: Given,
    on_progress: ProgressFn | None = None,
) -> Planned:
    """Measure, choose and probe: the config a new run trains with (a time budget's epochs
    are fitted once the run has timed its first steps).

    Args:
        dataset: the dataset folder.
        class_map: the classes the model learns.
        regions: multi-label regions over the dataset's classes, if any.
        given: the options the user gave; each wins over the plan.
        on_progress: called as each pair is measured (a time budget's check).

    Returns:
        The config and the plan behind it.
    """
    pairs, _ = find_pairs(dataset, skip_unpaired=given.config.skip_unpaired)
    fp = measure_dataset(pairs, regions.source if regions else class_map, on_progress=on_progress)
    cfg = given.config  # the split the run will train on: imbalance is measured on it
    fp.train_stems = resolve_split(
        dataset, pairs, cfg.split_file, val=cfg.val, test=cfg.test, seed=cfg.seed
    )["train"]
    machine = measure_machine(given.config.device)
    plan = plan_training(fp, machine, given)
    config = given.over(plan.options())
    if machine.device == "cuda" and given.get("batch_size") is None:
        limit = max(int(fp.n_images * config.train_share) // 4, PROBE_BATCHES[0])
        batch = probe_batch_size(config, class_map, fp, limit)
        why = (
            f"the largest batch that fits {GPU_HEADROOM:.0%} of GPU memory (probed); the "
            f"epochs, their steps and the validation interval are planned for it"
        )
        # Planned again from the probed batch: the epochs and validation follow from it.
        plan = plan_training(fp, machine, given, Choice("batch_size", batch, why))
        config = given.over(plan.options())
    return Planned(config, plan, fp, machine)


def plan_volume_run(dataset: Path, given: Given) -> Planned:
    """The config a new run on a volume folder trains with: its cases measured from their
    headers, the machine, and the plan (`volume_plan.plan_volumes`)."""
    fp = measure_volumes(read_volume_dataset(dataset), given.config.axis)
    machine = measure_machine(given.config.device)
    plan = plan_volumes(fp, machine, given)
    return Planned(given.over(plan.options()), plan, fp, machine)


def plan_run(
    dataset: Path, class_map: ClassMap, regions: Regions | None, given: Given,
    on_progress: ProgressFn | None = None,
) -> Planned:  # fmt: skip
    """A new run's plan: a volume folder's (`plan_volume_run`) or an image dataset's
    (`plan_new_run`, `on_progress` called as each pair is measured)."""
    if is_volume_folder(dataset):
        return plan_volume_run(dataset, given)
    return plan_new_run(dataset, class_map, regions, given, on_progress)


def dataset_classes(dataset: Path) -> ClassMap:
    """The dataset's class map: its ``classes.json``, or a volume folder's ``dataset.json``
    labels.

    Raises:
        SegtoolError: there is none, or it is malformed.
    """
    if is_volume_folder(dataset):
        return read_volume_dataset(dataset).class_map
    check_dataset_folder(dataset)
    path = dataset / CLASSES_FILE
    if not path.is_file():
        raise SegtoolError(f"{path}: no class map; rasterize with segtool or add a classes.json")
    return read_classes_json(path)


def training_classes(
    class_map: ClassMap, given: Given, state: dict[str, Any] | None
) -> tuple[ClassMap, Regions | None]:
    """The classes the model learns: the dataset's, or with ``regions`` (given, or the resumed
    run's) the regions' multi-label map.

    Raises:
        SegtoolError: bad regions, --tune-thresholds on exclusive classes, or more overlapping
            classes than training takes.
    """
    text = given.get("regions") or (state["config"].get("regions") if state else None)
    regions = parse_regions(text, class_map) if text else None
    if regions is not None:
        class_map = regions.class_map
    if given.config.tune_thresholds and not class_map.multilabel:
        raise SegtoolError(
            "--tune-thresholds tunes one cut per class of a multi-label model; this dataset's "
            "masks are exclusive (add --regions, or drop --tune-thresholds)"
        )
    if class_map.multilabel and mask_bits(class_map.num_foreground) > 16:
        raise SegtoolError(
            f"{class_map.num_foreground} overlapping classes: training takes multi-label masks "
            f"of up to 15 classes (16-bit); merge classes"
        )
    return class_map, regions


def choose_config(
    dataset: Path,
    out: Path,
    state: dict[str, Any] | None,
    class_map: ClassMap,
    regions: Regions | None,
    given: Given,
    plan: Callable[[Path, ClassMap, Regions | None, Given], Planned] | None,
    dist: Dist,
) -> tuple[TrainConfig, Planned | None, dict[str, Any] | None]:
    """The run's config: the checkpoint's own on --resume (with the plan it was made with),
    else the plan's (`plan`: `plan_run`, its budget check bound) or, without `plan`, the
    defaults', under the options given.

    Returns:
        (the config, the new plan when one was made, the plan record config.json keeps).

    Raises:
        SegtoolError: options that cannot hold together (a budget for several processes), or
            that differ from a resumed run's.
    """
    if state:
        return resume_config(out, given, state, class_map), None, RunFolder(out).plan()
    if given.config.time_budget and dist.world > 1:
        raise SegtoolError("--time-budget plans one process; under torchrun pass --epochs")
    if plan is None:
        return given.config, None, None
    planned = plan(dataset, class_map, regions, given)
    return planned.config, planned, planned.record()
