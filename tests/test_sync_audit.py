"""The training step and validation never wait for the device outside their planned points.

The meta device plays the GPU (shapes, no data), so this runs on a CPU-only machine:
`DeviceAudit` watches every operator and records each copy from the host to the device
and each read of a device value (``.item()``, ``float()``, ``bool()``, ``.cpu()``,
``.tolist()``), answering reads with zeros. A training step may copy its own batch, without
blocking, and nothing else, and read nothing; an epoch reads the loss every `SYNC_EVERY`
steps; a validation pass reads once, at the end, however many batches it has.
"""

from __future__ import annotations

import contextlib
import math
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segtool.core.classes import make_class_map, mode_for
from segtool.core.constants import MULTILABEL
from segtool.train.build import Hardware, Learner, Run
from segtool.train.data import device_seed, to_model_input
from segtool.train.device_augment import HFLIP, TONE, WARP, DeviceAugment
from segtool.train.losses import LOSSES, build_loss
from segtool.train.model import build_model
from segtool.train.schedule import WarmupCosine
from segtool.train.steps import SYNC_EVERY, train_one_epoch, train_step, validate

aten = torch.ops.aten
META = torch.device("meta")


class DataDependent(Exception):
    """An operator whose output size depends on device values (recorded as a read)."""


class DeviceAudit(TorchDispatchMode):
    """Records host->device copies (with their source and whether they block) and reads of
    device values; `planned` holds the storages of the batches that may be copied."""

    def __init__(self) -> None:
        super().__init__()
        self.planned: set[int] = set()
        self.uploads: list[tuple[str, bool]] = []  # (what, planned)
        self.reads: list[str] = []

    def plan(self, batch: dict) -> dict:
        """Allow `batch`'s tensors to be copied to the device (without blocking)."""
        self.planned |= {t.data_ptr() for t in (batch["image"], batch["mask"])}
        if "augment" in batch:  # the device augmentation's parameters travel with the batch
            self.planned.add(batch["augment"].data_ptr())
        return batch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten.nonzero.default and args[0].is_meta:  # a boolean gather's indices:
            self.reads.append(f"{func} of {tuple(args[0].shape)}")  # sized by the data
            x = args[0]
            return torch.empty((x.numel(), x.dim()), dtype=torch.int64, device=META)
        if func is aten._local_scalar_dense.default and args[0].is_meta:
            self.reads.append(f"{func} of {tuple(args[0].shape)}")
            return False if args[0].dtype == torch.bool else 0
        if func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst = args[0].device if func is aten.copy_.default else kwargs.get("device")
            if dst is not None and src.device.type == "cpu" and dst.type == "meta":
                planned = src.data_ptr() in self.planned and bool(kwargs.get("non_blocking"))
                self.uploads.append((f"{tuple(src.shape)} {src.dtype}", planned))
            elif dst is not None and src.is_meta and dst.type == "cpu":
                self.reads.append(f"copy of {tuple(src.shape)} to the host")
                return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
        try:
            return func(*args, **kwargs)
        except NotImplementedError as exc:  # a gather the meta device cannot size
            if "nonzero" not in str(exc):
                raise
            self.reads.append(f"{func}: a boolean gather")
            raise DataDependent(str(func)) from None

    def unplanned(self) -> list[str]:
        """Copies to the device that are not a planned batch copy."""
        return [what for what, planned in self.uploads if not planned]


@pytest.fixture
def audit(monkeypatch):
    """A `DeviceAudit` that also sees `torch.tensor`/`torch.as_tensor` made on the device
    from host values (those copy below the operators it watches)."""
    log = DeviceAudit()
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def made(*args, _original=original, _name=name, **kwargs):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type == "meta":
                log.uploads.append((f"torch.{_name} of host values", False))
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, made)
    return log


def meta_run(names: list[str], loss: str, multilabel: bool = False) -> Run:
    """A run whose model, optimiser and loss live on the meta device."""
    class_map = make_class_map(names, multilabel=multilabel)
    k = class_map.num_classes
    mode = mode_for(k, multilabel)
    model = build_model("unet", "resnet18", None, k, multilabel, 3, decoder_channels=(16,) * 5)
    model = model.to(META)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(100, 5))
    learner = Learner(
        model,
        model,
        build_loss(loss, mode, class_map.ignore_index),
        optimizer,
        scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
    )
    run = Run(Hardware(META, None, True, 0), learner, None, mode)  # type: ignore[arg-type]
    run.class_map = class_map  # type: ignore[attr-defined]
    return run


def batch(run: Run, n: int = 2, size: int = 32) -> dict:
    """A uint8 batch as `pad_collate` makes it, with ignore pixels in its masks."""
    ignore = run.class_map.ignore_index
    masks = torch.zeros((n, size, size), dtype=torch.uint8)
    masks[:, 4:9, 4:9] = 1
    masks[:, 0, :] = ignore
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    return {"image": images, "mask": masks, "stem": [f"case{i % 2}" for i in range(n)]}


MODES = {
    "binary": ["_background_", "lesion"],
    "multiclass": ["_background_", "cat", "dog"],
    MULTILABEL: ["_background_", "a", "b"],
}
LOSS_CASES = [(mode, loss) for mode in MODES for loss, spec in LOSSES.items() if mode in spec.modes]


#: Losses that still wait for the device inside the step: segmentation-models-pytorch's focal
#: and Lovász losses gather the pixels that are not ignored (Lovász also sorts per image), and
#: `MultilabelTargets` gathers them for every multi-label loss. A sum of a boolean mask sizes
#: the gather, so it is read back each step; the test holds the list exact both ways.
READING_LOSSES = {
    ("binary", "focal"), ("binary", "lovasz"), ("multiclass", "focal"),
    ("multiclass", "lovasz"),
    # multi-label losses gather the pixels that count (`MultilabelTargets`), which reads their
    # number; the Dice variants that take bit values themselves (`bits`) mask instead
    *((MULTILABEL, loss) for loss, spec in LOSSES.items() if not spec.bits),
}  # fmt: skip


@pytest.mark.parametrize(("mode", "loss"), LOSS_CASES)
def test_a_training_step_copies_only_its_batch_and_reads_nothing(audit, mode, loss):
    run = meta_run(MODES[mode], loss, multilabel=mode == MULTILABEL)
    batches = [audit.plan(batch(run)) for _ in range(2)]
    with contextlib.suppress(DataDependent), audit:
        for b in batches:
            train_step(run, b)
    if (mode, loss) in READING_LOSSES:
        assert audit.reads, f"{loss} ({mode}) no longer waits: take it off READING_LOSSES"
        return
    assert audit.reads == [], f"{loss} ({mode}) waits for the device"
    assert audit.unplanned() == [], f"{loss} ({mode}) copies from the host"
    assert len(audit.uploads) == 4  # each step: its images and its masks


def test_a_step_augmenting_on_the_device_copies_its_parameters_and_reads_nothing(audit):
    """Which transforms run is read from the parameters on the host, before they are copied:
    the step waits for nothing (the light preset: flips, warp, brightness/contrast)."""
    run = meta_run(MODES["multiclass"], "ce")
    augment = DeviceAugment("light", run.class_map.ignore_index)
    run.loaders = types.SimpleNamespace(on_device=augment)  # type: ignore[assignment]
    batches = []
    for seed in (1, 2):
        b = batch(run, n=4)
        b["augment"] = torch.stack([augment.draw(device_seed(seed, i)) for i in range(4)])
        batches.append(audit.plan(b))
    drawn = torch.cat([b["augment"] for b in batches])
    assert all(drawn[:, column].any() for column in (HFLIP, WARP, TONE))
    with audit:
        for b in batches:
            train_step(run, b)
    assert audit.reads == [] and audit.unplanned() == []
    assert len(audit.uploads) == 6  # each step: images, masks, parameters


@pytest.mark.parametrize("steps", [12, 25])
def test_an_epoch_reads_the_loss_every_sync_every_steps(audit, steps):
    run = meta_run(MODES["multiclass"], "ce")
    batches = [audit.plan(batch(run)) for _ in range(steps)]
    with audit:
        train_one_epoch(run, batches)
    assert audit.unplanned() == []
    # every SYNC_EVERY steps, the last step, and the mean returned (no wait by then)
    assert len(audit.reads) == math.ceil(steps / SYNC_EVERY) + 1


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("per_case", [False, True])
def test_validation_reads_once_however_many_batches(audit, mode, per_case):
    run = meta_run(MODES[mode], "dice", multilabel=mode == MULTILABEL)
    learner, class_map = run.learner, run.class_map
    loss_fn = (lambda logits, target: logits.float().mean()) if mode == MULTILABEL else None
    for n_batches in (1, 4):
        audit.reads.clear()
        batches = [audit.plan(batch(run, n=3)) for _ in range(n_batches)]
        cases: dict | None = {} if per_case else None
        with audit:
            _, counts, n = validate(
                learner.model, batches, loss_fn or learner.loss_fn, class_map, META, per_case=cases
            )
        assert len(audit.reads) == 1, audit.reads
        assert audit.unplanned() == []
        assert n == 3 * n_batches and counts.num_classes == class_map.num_classes
        assert cases is None or sorted(cases) == ["case0", "case1"]


def test_model_input_copies_the_batch_and_nothing_else(audit):
    images = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    audit.planned.add(images.data_ptr())
    with audit:
        for _ in range(3):
            x = to_model_input(images, META)
    assert x.dtype == torch.float32 and x.is_meta
    assert audit.uploads == [("(2, 3, 8, 8) torch.uint8", True)] * 3


def test_the_audit_sees_what_it_must_refuse(audit):
    """The audit itself: a blocking copy, a constant made from host values, a read."""
    images = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    audit.planned.add(images.data_ptr())
    with audit:
        x = images.to(META)  # blocking
        torch.as_tensor([0.5, 0.5, 0.5], device=META)
        torch.from_numpy(__import__("numpy").zeros(3)).to(META, non_blocking=True)
        float(x.float().sum())
        x.cpu()
    assert len(audit.unplanned()) == 3 and len(audit.reads) == 2


def test_masked_bce_weighs_instead_of_gathering_with_the_same_value():
    from segtool.train.losses import MaskedBCE

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 5, requires_grad=True)
    target = torch.randint(0, 2, (2, 6, 5))
    target[0, :2] = 255
    valid = target != 255
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.reshape(target.shape)[valid], target[valid].float()
    )
    assert float(MaskedBCE(255)(logits, target).detach()) == pytest.approx(
        float(expected.detach()), rel=1e-6
    )
    nothing = MaskedBCE(255)(logits, torch.full_like(target, 255))
    nothing.backward()
    assert float(nothing.detach()) == 0 and float(logits.grad.abs().sum()) == 0


def test_a_batch_crosses_to_the_device_as_uint8(audit, tmp_path):
    """A dataset's items and `pad_collate`'s batches keep images and masks uint8, a quarter
    and an eighth of the bytes of float32 and int64 on the way to the device; the step makes
    them float and int64 there."""
    from segtool.core.classes import read_classes_json
    from segtool.core.dataset import find_pairs
    from segtool.train.data import SegmentationDataset, pad_collate
    from tests.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", n=2, size=32)
    items = SegmentationDataset(find_pairs(data)[0], read_classes_json(data / "classes.json"))
    collated = pad_collate([items[0], items[1]], 255)
    assert collated["image"].dtype == collated["mask"].dtype == torch.uint8
    run = meta_run(MODES["multiclass"], "ce")
    with audit:
        train_step(run, audit.plan(collated))
    assert audit.uploads == [
        ("(2, 3, 32, 32) torch.uint8", True),
        ("(2, 32, 32) torch.uint8", True),
    ]
