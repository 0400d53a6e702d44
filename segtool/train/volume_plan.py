"""The plan of a run on a volume folder: the same table as for images (each choice and why),
made from the cases' NIfTI headers alone (no voxel is decoded) and the machine.

A volume folder trains on 2-D slices along ``--axis``; its plan chooses the patch size (whole
slices, or patches where the median slice is larger than the model takes whole), the batch
size and the epochs, by the rules images use (`plan.plan_batch`, `epoch_length.plan_epochs`), counted
in cases, slices and voxels. A time budget re-fits the epochs as the run goes, from the
epochs' own times (volumes have no first-step fit: their slices are cached only once the run
starts), which the epochs' reason says.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from segtool.core.volumes import slice_axis
from segtool.sources.nifti import read_geometry
from segtool.sources.volume_folder import VolumeDataset
from segtool.train.choices import Plan, given_choice
from segtool.train.config import Given
from segtool.train.epoch_length import plan_epochs
from segtool.train.fingerprint import Machine
from segtool.train.plan import MAX_SIDE, PATCH, plan_batch


@dataclass
class VolumeFingerprint:
    """A volume folder as the plan sees it, from the headers of its labelled cases."""

    cases: int  #: labelled cases
    channels: int  #: sequences (model input channels)
    axis: str  #: the slice axis
    slices: int  #: median slices a case along `axis`
    slice_shape: tuple[int, int]  #: median (height, width) of a slice, in voxels
    voxels: int  #: median voxels a case

    def to_json(self) -> dict[str, Any]:
        """A plain dict for config.json."""
        doc = asdict(self)
        doc["slice_shape"] = list(self.slice_shape)
        return doc


def measure_volumes(volumes: VolumeDataset, axis: str) -> VolumeFingerprint:
    """The cases' slice counts and slice sizes along `axis`, read from their headers (each
    case's label, which shares the image's grid).

    Raises:
        SegtoolError: a file that cannot be read, or an affine with no such axis.
    """
    slices, heights, widths, voxels = [], [], [], []
    for case in volumes.cases:
        shape, _, affine = read_geometry(case.label or case.images[0])
        along = slice_axis(affine, axis)
        height, width = (side for i, side in enumerate(shape) if i != along)
        slices.append(shape[along])
        heights.append(height)
        widths.append(width)
        voxels.append(math.prod(shape))
    median = statistics.median_low
    return VolumeFingerprint(
        len(volumes.cases), len(volumes.channels), axis, median(slices),
        (median(heights), median(widths)), median(voxels),
    )  # fmt: skip


def plan_volumes(fp: VolumeFingerprint, machine: Machine, given: Given) -> Plan:
    """Choose the patch size, the batch size and the epochs of a volume folder's run (each
    option given wins, shown as "given").

    Args:
        fp: the cases measured (`measure_volumes`).
        machine: the device the run will use.
        given: the options the user set (the training share of the cases among them).

    Returns:
        The plan; its `options()` are `TrainConfig` fields.
    """
    plan = Plan()
    height, width = fp.slice_shape
    shape = f"median {fp.axis} slice {width}x{height} voxels"
    if given_choice(plan, given, "crop"):
        pass
    elif max(height, width) <= MAX_SIDE[machine.device]:
        plan.set("crop", None, f"{shape} fits the model whole: whole slices")
    else:
        patch = PATCH[machine.device]
        plan.set("crop", patch, f"{shape}, over {MAX_SIDE[machine.device]} -> patches "
                                f"{patch}x{patch}")  # fmt: skip
    train_cases = max(int(fp.cases * given.config.train_share), 1)
    train_slices = train_cases * fp.slices
    plan_batch(plan, machine, given, train_slices, "slices", probed=False)
    steps = max(math.ceil(train_slices / plan.options()["batch_size"]), 1)
    plan_epochs(plan, machine, given, steps,
                f" ({train_cases} training cases of {fp.slices} slices, {fp.voxels:,} voxels "
                f"each)")  # fmt: skip
    budget = given.config.time_budget
    epochs = next(c for c in plan.choices if c.option == "epochs")
    if budget and epochs.why != "given":
        epochs.why += f"; re-fitted to the {budget:g}s budget after each epoch, from its time"
    return plan
