"""Training: the loss falls and Dice rises, resume is exact, bad inputs fail clearly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from segtool.core.classes import read_classes_json
from segtool.core.errors import SegtoolError
from segtool.core.masks import write_mask
from segtool.train.checkpoint import load_checkpoint
from segtool.train.curves import read_metrics
from segtool.train.loop import fit
from segtool.train.model import load_model
from segtool.train.steps import Reporter
from tests.cli import invoke
from tests.synthetic import make_dataset

FAST = {"encoder": "resnet18", "workers": 0, "batch_size": 4, "augment": "none", "lr": 3e-3}


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"))


@pytest.fixture(scope="module")
def trained(easy, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = fit(easy, run, epochs=8, **FAST)
    return run, result


def test_loss_falls_and_dice_rises(trained):
    run, result = trained
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert float(rows[-1]["train_loss"]) < 0.6 * float(rows[0]["train_loss"])
    assert result.best_dice > 0.7, rows
    assert result.stopped == "finished" and result.epochs_done == 8
    assert set(result.best_per_class) == {"square", "disc"}


def test_run_folder_contents(trained, easy):
    run, result = trained
    for name in ("config.json", "classes.json", "split.json", "curves.png", "metrics.csv"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["encoder"] == "resnet18" and config["options"]["epochs"] == 8
    assert len(config["dataset_fingerprint"]) == 16 and "torch" in config["versions"]
    assert json.loads((run / "split.json").read_text()) == json.loads(
        (easy / "split.json").read_text()
    )
    # The saved model is the best epoch's, and loads in plain segmentation-models-pytorch.
    import segmentation_models_pytorch as smp

    plain = smp.from_pretrained(str(run / "model"))
    ours = load_model(run / "model")
    x = torch.randn(1, 3, 64, 64)
    plain.eval()
    ours.eval()
    assert torch.equal(plain(x), ours(x))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # no code can run
    assert state["epoch"] == 8 and state["best_epoch"] == result.best_epoch


class StopAfter(Reporter):
    """Presses Ctrl-C once epoch `n` has been saved."""

    def __init__(self, n: int) -> None:
        self.n = n

    def epoch_end(self, row):
        if row["epoch"] == self.n:
            raise KeyboardInterrupt


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(easy, tmp_path):
    options = {**FAST, "epochs": 3, "augment": "light", "size": 32}
    fit(easy, tmp_path / "straight", **options)
    stopped = fit(easy, tmp_path / "resumed", reporter=StopAfter(2), **options)
    assert stopped.stopped == "interrupted" and stopped.epochs_done == 2
    resumed = fit(easy, tmp_path / "resumed", resume=True, epochs=3)
    assert resumed.epochs_done == 3
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(tmp_path / "resumed/metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # A larger --epochs extends the finished run.
    extended = fit(easy, tmp_path / "resumed", resume=True, epochs=4)
    assert extended.epochs_done == 4


def test_resume_with_other_workers_gives_the_same_weights(easy, tmp_path):
    """Augmentation draws from (seed, epoch, sample) alone, so --workers (which resume may
    change) cannot change the weights."""
    options = {**FAST, "epochs": 2, "augment": "strong", "size": 32}
    fit(easy, tmp_path / "straight", **options)
    fit(easy, tmp_path / "resumed", reporter=StopAfter(1), **options)
    fit(easy, tmp_path / "resumed", resume=True, workers=2)
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_dice_is_evaluates_mean_on_the_same_masks(trained, easy, tmp_path):
    """Training's validation and segtool evaluate count with the same function: scoring the
    saved model's predictions of the val images gives the logged val_dice."""
    from segtool.evaluate.report import evaluate_dirs
    from segtool.predict.folder import predict_dir

    run, result = trained
    val = json.loads((run / "split.json").read_text())["val"]
    best = next(
        r for r in read_metrics(run / "metrics.csv") if int(r["epoch"]) == result.best_epoch
    )
    predict_dir(run, easy / "images", tmp_path / "pred", stems=set(val), device="cpu")
    report = evaluate_dirs(
        tmp_path / "pred", easy / "masks", classes=run / "classes.json", only=set(val), jobs=1
    )
    assert report.summary["mean"]["dice"] == pytest.approx(float(best["val_dice"]), abs=1e-5)
    for name, value in result.best_per_class.items():
        assert report.summary["per_class"][name]["dice"] == pytest.approx(value, abs=1e-5)


def test_patience_stops_early(easy, tmp_path):
    result = fit(easy, tmp_path / "run", epochs=6, patience=1, **{**FAST, "lr": 0.0})
    assert result.stopped == "early stop" and result.epochs_done == 2


def test_nan_loss_stops_with_a_clear_message(easy, tmp_path, monkeypatch):
    import segtool.train.build as train_module

    real = train_module.build_loss

    class Breaks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = real("dice", "multiclass", 255)
            self.calls = 0

        def forward(self, logits, target):
            self.calls += 1
            loss = self.inner(logits, target)
            return loss * math.nan if self.calls > 4 else loss

    monkeypatch.setattr(train_module, "build_loss", lambda *a, **k: Breaks())
    with pytest.raises(SegtoolError, match=r"epoch 2: the loss became nan .*last good checkpoint"):
        fit(easy, tmp_path / "run", epochs=3, **FAST)
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["epoch"] == 1


def test_binary_dataset_trains_one_channel(tmp_path):
    ds = make_dataset(tmp_path / "bin", classes=2)
    result = fit(ds, tmp_path / "run", epochs=8, **FAST)
    assert result.best_dice > 0.5
    assert load_model(tmp_path / "run" / "model").segmentation_head[0].out_channels == 1


def test_crop_training(easy, tmp_path):
    result = fit(easy, tmp_path / "run", epochs=2, crop=32, fg_crop=0.5, **FAST)
    assert result.epochs_done == 2


def test_local_encoder_weights(easy, tmp_path):
    from segtool.train.model import build_model

    donor = build_model("unet", "resnet18", None, 3)
    torch.save(donor.encoder.state_dict(), tmp_path / "enc.pt")
    model = build_model("unet", "resnet18", str(tmp_path / "enc.pt"), 3)
    assert torch.equal(model.encoder.conv1.weight, donor.encoder.conv1.weight)
    with pytest.raises(SegtoolError, match="no such file"):
        build_model("unet", "resnet18", str(tmp_path / "missing.pt"), 3)


# --- bad inputs ----------------------------------------------------------------------------


def test_existing_run_needs_resume_or_overwrite(trained, easy):
    run, _ = trained
    with pytest.raises(SegtoolError, match="already exists; pass --resume .* or --overwrite"):
        fit(easy, run, epochs=1, **FAST)


def test_resume_without_checkpoint(easy, tmp_path):
    with pytest.raises(SegtoolError, match="no such run to resume; drop --resume"):
        fit(easy, tmp_path / "nothing", resume=True)


def test_resume_with_another_class_map(trained, tmp_path):
    run, _ = trained
    other = make_dataset(tmp_path / "other", classes=2)
    with pytest.raises(SegtoolError, match="trained on classes .* but the dataset has"):
        fit(other, run, resume=True, epochs=9)


def test_resume_refuses_changed_settings(trained, easy):
    run, _ = trained
    with pytest.raises(SegtoolError, match="--lr differs from the run's"):
        fit(easy, run, resume=True, epochs=9, lr=0.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loss": "dicey"}, "--loss 'dicey' is not one of dice, dice-image"),
        ({"arch": "unnet"}, "--arch 'unnet' is unknown; did you mean 'unet'"),
        ({"encoder": "resnet19"}, "--encoder 'resnet19' is unknown; did you mean 'resnet18'"),
        ({"batch_size": 50}, "--batch-size 50 is larger than the 12 training images"),
        ({"size": 32, "crop": 32}, "exclude each other"),
    ],
)
def test_bad_options(easy, tmp_path, options, message):
    with pytest.raises(SegtoolError, match=message):
        fit(easy, tmp_path / "run", epochs=1, **{**FAST, **options})


def test_bad_datasets(tmp_path):
    with pytest.raises(SegtoolError, match="no class map"):
        fit(tmp_path, tmp_path / "run")
    ds = make_dataset(tmp_path / "ds")
    cmap = read_classes_json(ds / "classes.json")
    write_mask(ds / "masks" / "s00.png", np.zeros((10, 10), np.uint8), cmap)
    with pytest.raises(SegtoolError, match="s00.png is 48x48 but its mask .* is 10x10"):
        fit(ds, tmp_path / "run", **FAST)
    assert not (tmp_path / "run" / "checkpoints").exists()
    write_mask(ds / "masks" / "s00.png", np.zeros((48, 48), np.uint8), cmap)
    (ds / "split.json").write_text('{"seed": 0, "train": ["ghost"], "val": ["s01"], "test": []}')
    with pytest.raises(SegtoolError, match="not in the dataset, e.g. 'ghost'"):
        fit(ds, tmp_path / "run2", **FAST)
    for p in (ds / "masks").iterdir():
        p.unlink()
    with pytest.raises(SegtoolError, match="no image/mask pairs"):
        fit(ds, tmp_path / "run3", **FAST)
    import shutil

    shutil.rmtree(ds / "images")
    with pytest.raises(
        SegtoolError, match="images: no such folder; a dataset has images/ and masks/"
    ):
        fit(ds, tmp_path / "run4", **FAST)


def train_cli_run(dataset, run, epochs):
    """`segtool train` through the CLI with the fast test settings."""
    args = [
        "train",
        str(dataset),
        "--out",
        str(run),
        "--epochs",
        str(epochs),
        "--encoder",
        "resnet18",
        "--workers",
        "0",
        "--batch-size",
        "4",
    ]
    return invoke(args)


def test_cli_train(easy, tmp_path):
    result = train_cli_run(easy, tmp_path / "run", epochs=1)
    assert result.exit_code == 0, result.output
    assert "best epoch 1 of 1" in result.stdout and "square" in result.stdout
    assert result.output.count(f"{tmp_path / 'run'}:") == 1  # the run folder named once
    bad = invoke(["train", str(easy), "--out", str(tmp_path / "r2"), "--loss", "nope"])
    assert bad.exit_code == 2  # not a valid choice: usage error


def test_two_process_ddp_on_cpu(easy, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",  # a free port: other test runs on this machine may be training too
        "-m",
        "segtool",
        "train",
        str(easy),
        "--out",
        str(tmp_path / "ddp"),
        "--epochs",
        "2",
        "--encoder",
        "resnet18",
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--augment",
        "none",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch") == 1  # rank 0 alone prints
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    rows = read_metrics(tmp_path / "ddp" / "metrics.csv")
    assert len(rows) == 2
    # Each rank validates half of the split; the counts are summed over both ranks.
    n_val = len(json.loads((easy / "split.json").read_text())["val"])
    assert [int(r["val_images"]) for r in rows] == [n_val, n_val]


def test_cli_ctrl_c_says_how_to_resume(easy, tmp_path, monkeypatch):
    import segtool.cli.train_progress as train_progress

    class Interrupting(train_progress.RichReporter):
        def epoch_end(self, row):
            super().epoch_end(row)
            raise KeyboardInterrupt

    monkeypatch.setattr(train_progress, "RichReporter", Interrupting)
    result = train_cli_run(easy, tmp_path / "run", epochs=3)
    assert result.exit_code == 130
    assert "last.pt holds epoch 1; continue with: segtool train" in result.stderr
    assert "--resume" in result.stderr


def test_the_trainer_runs_its_hooks_in_order_and_a_variant_overrides_one(easy, tmp_path):
    from segtool.train.budget import Budget
    from segtool.train.config import TrainConfig
    from segtool.train.distributed import Dist
    from segtool.train.planning import dataset_classes
    from segtool.train.runfolder import RunFolder
    from segtool.train.trainer import Setup, Trainer

    calls = []

    class Logged(Trainer):
        def on_train_start(self):
            calls.append("train start")
            super().on_train_start()

        def on_epoch_start(self, epoch):
            calls.append(f"epoch {epoch}")
            super().on_epoch_start(epoch)

        def train_step(self, batch):
            calls.append("step")
            return super().train_step(batch)

        def validate(self, batches=None):
            calls.append("validate")
            return super().validate(batches)

        def on_epoch_end(self, epoch, train_loss, validation):
            calls.append(f"end {epoch}")
            super().on_epoch_end(epoch, train_loss, validation)
            return True  # a variant that always stops after one epoch

        def on_train_end(self, stopped, epoch):
            calls.append(f"train end: {stopped}")
            return super().on_train_end(stopped, epoch)

    (tmp_path / "run").mkdir()
    config = TrainConfig(epochs=3, size=32, **FAST)
    setup = Setup(
        easy, tmp_path / "run", RunFolder(tmp_path / "run"), config, dataset_classes(easy)
    )
    trainer = Logged(setup, Reporter(), Dist(), Budget())
    result = trainer.run_training()
    steps = len(trainer.run.loaders.train)  # one train_step per batch of the epoch
    assert steps >= 2
    assert calls == [
        "train start",
        "epoch 1",
        *["step"] * steps,
        "validate",
        "end 1",
        "train end: early stop",
    ]
    assert result.epochs_done == 1 and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
