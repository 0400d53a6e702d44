"""The training step's options: validation every k epochs (which epochs validate, what
metrics.csv says, the best model and patience among validated epochs, resume keeping the
cycle, the plan's and the budget's k), AdamW's kind per device, cudnn.benchmark's rule, and
--compile training a step as the plain model does."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from segtool.core.classes import make_class_map, mode_for
from segtool.core.errors import SegtoolError
from segtool.train.build import (
    Hardware,
    Learner,
    Run,
    adamw_kind,
    compiled,
    fixed_input,
    hardware_for,
)
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import Given, TrainConfig
from segtool.train.curves import read_metrics
from segtool.train.epoch_length import MIN_VALIDATIONS, validation_interval
from segtool.train.fingerprint import ClassStats, Fingerprint, Machine
from segtool.train.loop import fit
from segtool.train.losses import build_loss
from segtool.train.plan import Timing, epochs_within, fit_budget, plan_training
from segtool.train.runstate import Progress, epoch_row
from segtool.train.schedule import WarmupCosine
from segtool.train.steps import train_step
from tests.synthetic import make_dataset
from tests.test_sync_audit import batch as audit_batch
from tests.test_train import FAST, StopAfter


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


def _validated(run):
    return [(int(r["epoch"]), int(r["validated"]), r["val_dice"] != "") for r in read_metrics(run)]


def test_every_kth_epoch_and_the_last_validate_and_resume_keeps_the_cycle(easy, tmp_path):
    options = {**FAST, "epochs": 5, "val_every": 2, "size": 32}
    straight = fit(easy, tmp_path / "straight", **options)
    # Epochs 2 and 4 (every second) and 5 (the last) validate; the others leave the cells
    # empty and say so.
    expected = [(1, 0, False), (2, 1, True), (3, 0, False), (4, 1, True), (5, 1, True)]
    assert _validated(tmp_path / "straight/metrics.csv") == expected
    assert straight.best_epoch in (2, 4, 5)
    # Stopped after epoch 3, in the middle of a cycle: the resumed run validates 4 and 5.
    fit(easy, tmp_path / "resumed", reporter=StopAfter(3), **options)
    fit(easy, tmp_path / "resumed", resume=True)
    assert _validated(tmp_path / "resumed/metrics.csv") == expected
    a = read_metrics(tmp_path / "straight/metrics.csv")
    b = read_metrics(tmp_path / "resumed/metrics.csv")
    assert [r["val_dice"] for r in a] == [r["val_dice"] for r in b]
    state = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert state["best_epoch"] == straight.best_epoch


def test_epochs_without_validation_leave_the_best_and_the_patience_count_alone():
    progress = Progress()
    scored = {"dice": 0.5, "iou": 0.4, "per_class": {"a": 0.5}}
    assert progress.record(epoch_row(1, 1.0, (2.0, 4, scored), 1e-3, 1.0), {"a": 0.5})
    for epoch in (2, 3):
        row = epoch_row(epoch, 0.9, None, 1e-3, 1.0)
        assert row["val_dice"] is None and row["validated"] == 0 and "dice_a" not in row
        assert not progress.record(row, None)
    assert (progress.best_epoch, progress.best_dice, progress.bad_epochs) == (1, 0.5, 0)
    worse = {"dice": 0.4, "iou": 0.3, "per_class": {"a": 0.4}}
    assert not progress.record(epoch_row(4, 0.8, (2.0, 4, worse), 1e-3, 1.0), {"a": 0.4})
    assert progress.bad_epochs == 1 and len(progress.rows) == 4


@pytest.mark.parametrize(
    ("validation", "epoch", "epochs", "k"),
    [
        (1.0, 10.0, 100, 1),  # 1 / (10 + 1) = 9 %: every epoch
        (10.0, 10.0, 100, 9),  # 10 / (9 * 10 + 10) = 10 %
        (10.0, 10.0, 20, 4),  # 20 epochs keep 5 validations: at most every 4th
        (3.0, 10.0, 100, 3),  # 3 / (2 * 10 + 3) = 13 % > 10 %; 3 / 33 = 9 %
        (0.0, 10.0, 100, 1),
    ],
)
def test_validation_interval_by_hand(validation, epoch, epochs, k):
    assert validation_interval(validation, epoch, epochs) == k
    if k > 1 and epochs // MIN_VALIDATIONS > k:
        assert validation / (k * epoch + validation) <= 0.1 + 1e-12
        assert validation / ((k - 1) * epoch + validation) > 0.1


def _fingerprint(n):
    return Fingerprint(n, (64, 64), (64, 64), 3, [ClassStats("a", 0.3, n, 500.0)])


def test_the_plan_validates_every_epoch_unless_a_pass_is_long():
    cpu = Machine("cpu", "x86_64", 8.0, 2)

    def every(n, **given):
        return plan_training(_fingerprint(n), cpu, Given.parse(**given)).options()["val_every"]

    assert every(4000) == 1  # the default shares: validation ~10 % of an epoch
    # Half the images validate, batch 4: 500 training steps, 500 validation batches at
    # half a step each -> 250 / (k * 500 + 250) <= 10 % from k = 5 (k = 4: 11 %).
    assert every(4000, val=0.5, test=0.0, batch_size=4, epochs=100) == 5
    assert every(40, val=0.5, test=0.0, batch_size=4, epochs=100) == 1  # a short pass
    assert every(4000, val=0.5, test=0.0, batch_size=4, epochs=100, val_every=3) == 3


def test_the_budget_counts_validation_every_k_epochs():
    # 10 s of steps an epoch, validation 1 s: epochs of 10 + 1 + 0.3 s in 100 - 0 s.
    assert epochs_within(Timing(1.0, 10, 1.0, 0.0), 100.0) == 8
    # Every 4th: 10 + 0.25 + 0.3 a epoch, and the last epoch's 0.75 s more: (100 - 0.75) / 10.55
    assert epochs_within(Timing(1.0, 10, 1.0, 0.0), 100.0, val_every=4) == 9
    plan = plan_training(_fingerprint(2000), Machine("cpu", "x86_64", 8.0, 2), Given())
    # A validation pass measured at 4 s against 10 s of training: every 4th epoch, so
    # epochs of 10 + 1 + 0.3 s, and the last one's 3 s more: (600 - 3) // 11.3 = 52.
    fit_budget(plan, _fingerprint(2000), Timing(1.0, 10, 4.0, 0.0), 600.0)
    assert plan.options()["val_every"] == 4 and plan.options()["epochs"] == 52
    assert 4.0 / (4 * 10 + 4.0) <= 0.1 < 4.0 / (3 * 10 + 4.0)
    # The same times for a pass of a few batches: short, every epoch.
    plan = plan_training(_fingerprint(2000), Machine("cpu", "x86_64", 8.0, 2), Given())
    fit_budget(plan, _fingerprint(2000), Timing(1.0, 10, 4.0, 0.0, val_batches=5), 600.0)
    assert plan.options()["val_every"] == 1


def test_adamw_fuses_on_cuda_and_loops_over_tensors_elsewhere():
    cuda = torch.device("cuda")  # a device name only: nothing runs on it
    on_gpu = [SimpleNamespace(device=cuda)] * 2
    assert adamw_kind(cuda, on_gpu) == {"fused": True, "foreach": None}
    assert adamw_kind(cuda, [*on_gpu, SimpleNamespace(device=torch.device("cpu"))])["foreach"]
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert adamw_kind(torch.device("cpu"), params) == {"fused": None, "foreach": True}


def test_a_resumed_optimiser_steps_as_this_machine_does(easy, tmp_path):
    fit(easy, tmp_path / "run", **{**FAST, "epochs": 1, "size": 32})
    state = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    for group in state["optimizer"]["param_groups"]:
        assert group["foreach"] is True and not group["fused"]
        group.update(fused=True, foreach=None)  # as if saved on a GPU
    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), foreach=True)
    learner = SimpleNamespace(optimizer=optimizer)
    saved = optimizer.state_dict()
    saved["param_groups"][0].update(fused=True, foreach=None)
    Learner.load_optimizer(learner, saved)  # type: ignore[arg-type]
    assert optimizer.param_groups[0]["foreach"] is True and not optimizer.param_groups[0]["fused"]


def test_cudnn_benchmarks_only_fixed_input_shapes(monkeypatch):
    assert fixed_input(TrainConfig(size=64)) and fixed_input(TrainConfig(crop=64))
    assert not fixed_input(TrainConfig())  # whole images of their own sizes
    # what the run's steps get on a GPU (a device name only: nothing runs on it) and a CPU
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    whole = hardware_for(TrainConfig(workers=2), cuda)
    assert not torch.backends.cudnn.benchmark  # shapes vary: timing each would cost more
    assert (whole.amp_dtype, whole.channels_last, whole.workers) == (torch.bfloat16, True, 2)
    assert hardware_for(TrainConfig(crop=64, workers=0), cpu) == Hardware(cpu, None, False, 0)
    assert not torch.backends.cudnn.benchmark
    hardware_for(TrainConfig(crop=64), cuda)
    assert torch.backends.cudnn.benchmark


def _tiny_run(model: torch.nn.Module) -> Run:
    class_map = make_class_map(["background", "square", "disc"])
    mode = mode_for(class_map.num_classes, class_map.multilabel)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(10, 1))
    learner = Learner(model, model, build_loss("ce", mode, class_map.ignore_index), optimizer,
                      scheduler, torch.amp.GradScaler("cpu", enabled=False))  # fmt: skip
    run = Run(Hardware(torch.device("cpu"), None, False, 0), learner, None, mode)  # type: ignore[arg-type]
    run.class_map = class_map  # type: ignore[attr-defined]
    return run


def test_compile_trains_a_step_to_the_plain_models_loss():
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)
        )

    plain = _tiny_run(model())
    try:
        fast = _tiny_run(compiled(model(), torch.device("cpu")))
    except SegtoolError as exc:  # the refusal's own line says why
        pytest.skip(f"torch.compile cannot run here: {exc}")
    from torch._dynamo.utils import counters

    counters.clear()
    torch.manual_seed(1)
    first = audit_batch(plain, n=2, size=16)
    losses = []
    for run in (plain, fast):
        losses.append([float(train_step(run, first)) for _ in range(2)])
    assert all(math.isfinite(x) for x in losses[0])
    assert losses[0][1] < losses[0][0]  # the step trained
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled model did compile


def test_compile_is_refused_in_one_line_without_a_compiler(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SegtoolError, match=r"^--compile: .*C\+\+ compiler.*without --compile$"):
        compiled(torch.nn.Conv2d(3, 2, 1), torch.device("cpu"))


def test_the_epoch_line_says_when_an_epoch_did_not_validate():
    import io

    from rich.console import Console

    from segtool.cli.train_progress import RichReporter

    console = Console(file=io.StringIO(), width=200, color_system=None)
    reporter = RichReporter(console)
    for epoch, validation in (
        (1, None),
        (2, (2.0, 4, {"dice": 0.5, "iou": 0.25, "per_class": {}})),
    ):
        reporter.epoch_start(epoch, 2, 1)
        reporter.epoch_end(epoch_row(epoch, 1.0, validation, 1e-3, 1.0))
    first, second = console.file.getvalue().strip().splitlines()[-2:]
    assert "no validation this epoch" in first and "Dice" not in first
    assert "val loss 0.5000  val Dice 0.5000  IoU 0.2500" in second
