"""Every figure of the GPU path in one run (under 8 minutes on one H100): run it as is on a
machine with a GPU and paste its output.

1. the training loader's CPU ms per 512x512 image, light and strong augmentation
   (`bench_loader.py`, where this segtool has it);
2. segtool train's steady images/s against an expert's bare forward+backward loop at 512x512
   (`bench_train.py`; goal: at least 0.9x);
3. segtool predict's steady images/s against the bare forward loop (`bench_predict.py`; goal:
   at least 0.8x);
4. the sync audit: three training steps and a validation pass under
   ``torch.cuda.set_sync_debug_mode`` (a step waits for the device never, a pass once), and
   the meta-device audit of ``tests/test_sync_audit.py``;
5. predict's writers, threads against processes, on this machine's cores
   (`bench_writing.py`; `predict/writing.PROCESS_CORES` is chosen from it).

Without a GPU it says so and exits 0; ``--cpu`` runs every part on the CPU at tiny sizes
(what the test suite does, so the script cannot rot).

    python benchmarks/gpu_check.py [--cpu]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_predict, bench_train, bench_writing  # noqa: E402

#: The arguments of each part: on the GPU (steady state at 512x512), and the CPU smoke run.
SIZES = {
    "gpu": {
        "loader": ["--images", "300", "--size", "512"],
        "train": ["--images", "1000", "--size", "512", "--epochs", "3"],
        "predict": ["--images", "2000", "--size", "512", "--large", "2048"],
        "audit": [],
        "writing": ["--images", "300", "--size", "512", "--rounds", "2"],
    },
    "cpu": {
        "loader": ["--images", "8", "--size", "64", "--batch", "4"],
        "train": ["--images", "24", "--size", "32", "--epochs", "2"],
        "predict": ["--images", "24", "--size", "64", "--large", "0"],
        "audit": ["-k", "every_sync_every"],
        "writing": ["--images", "16", "--size", "64", "--rounds", "1"],
    },
}
GOALS = {"train": 0.9, "predict": 0.8}
#: The loader's goal: CPU ms per 512x512 image with light augmentation (decoded cache, the
#: augmentation on the device), and the whole check's wall time on one GPU.
LOADER_GOAL_MS, MINUTES = 1.5, 8.0


def loader_figures(args: list[str]) -> str:
    """`bench_loader.py`'s output, or why there is none."""
    script = ROOT / "benchmarks" / "bench_loader.py"
    if not script.is_file():
        return "loader: benchmarks/bench_loader.py is not in this segtool"
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if done.returncode:
        return f"loader: bench_loader.py failed:\n{done.stderr.strip()[-2000:]}"
    return done.stdout.rstrip()


def loader_ms(figures: str) -> float | None:
    """The light preset's CPU ms per image from the decoded cache (the GPU's path) in
    `bench_loader.py`'s output; None where it printed none."""
    found = re.search(r"light:\n(?:.*\n)*?\s*cached, augmented on the device:\s*([\d.]+)", figures)
    return float(found[1]) if found else None


def cuda_syncs(device: torch.device) -> tuple[int, int]:
    """Synchronising calls (``set_sync_debug_mode``) in three training steps and in one
    validation pass of three batches, after two warm-up steps, on a small U-Net."""
    from segtool.core.classes import mode_for, read_classes_json
    from segtool.core.dataset import find_pairs
    from segtool.train.build import Hardware, Learner, Run, adamw_kind
    from segtool.train.data import SegmentationDataset, pad_collate
    from segtool.train.losses import build_loss
    from segtool.train.model import build_model
    from segtool.train.schedule import WarmupCosine
    from segtool.train.steps import train_step, validate
    from tests.synthetic import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "ds", n=4, size=128)
        cmap = read_classes_json(data / "classes.json")
        items = SegmentationDataset(find_pairs(data)[0], cmap)
        batch = pad_collate([items[i] for i in range(4)], cmap.ignore_index)
    if device.type == "cuda":  # as the loader pins them
        batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    k = cmap.num_classes
    model = build_model("unet", "resnet18", None, k, decoder_channels=(16,) * 5)
    model = model.to(device, memory_format=torch.channels_last)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, **adamw_kind(device, params))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(100, 5))
    loss_fn = build_loss("bce-dice", mode_for(k), cmap.ignore_index)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    learner = Learner(model, model, loss_fn, optimizer, scheduler, scaler)
    run = Run(Hardware(device, torch.bfloat16, True, 0), learner, None, mode_for(k))  # type: ignore[arg-type]
    for _ in range(2):
        train_step(run, batch)
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(3):
                train_step(run, batch)
            steps = len(caught)
            validate(model, [batch] * 3, loss_fn, cmap, device, amp_dtype=torch.bfloat16)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return steps, len(caught) - steps


def audit(device: torch.device, pytest_args: list[str]) -> tuple[bool, list[str]]:
    """The sync audit: on CUDA the real one; everywhere the meta-device test file."""
    lines, ok = [], True
    if device.type == "cuda":
        steps, validation = cuda_syncs(device)
        ok = steps == 0 and validation <= 1
        lines.append(
            f"sync audit on {torch.cuda.get_device_name(device)}: {steps} waits in 3 training "
            f"steps (0 planned), {validation} in a validation pass of 3 batches (1 planned)"
        )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_sync_audit.py"), *pytest_args],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    lines.append(f"meta-device audit (tests/test_sync_audit.py): {summary}")
    return ok and done.returncode == 0, lines


def main(argv: list[str] | None = None) -> int:
    """Print every figure; 0 unless the sync audit failed (and 0 without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (a smoke run)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no GPU is present (torch.cuda.is_available() is False); nothing to "
              "measure. Run it on a machine with a GPU, or with --cpu for a smoke run.")  # fmt: skip
        return 0
    started = time.perf_counter()
    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = SIZES["cpu" if args.cpu else "gpu"]
    name = "CPU" if args.cpu else torch.cuda.get_device_name(device)
    print(f"== gpu_check on {name}, torch {torch.__version__}")
    print("== 1. training loader, CPU ms per image")
    figures = loader_figures(sizes["loader"])
    print(figures)
    print("== 2. training: segtool against the bare forward+backward loop")
    trained = bench_train.main([*sizes["train"], "--device", device.type])
    print("== 3. predict: segtool against the bare forward loop")
    predicted = bench_predict.main([*sizes["predict"], "--device", device.type])
    print("== 4. sync audit")
    passed, lines = audit(device, sizes["audit"])
    print("\n".join(lines))
    print("== 5. predict's writers: threads against processes")
    bench_writing.main(sizes["writing"])
    print("== summary")
    light = loader_ms(figures)
    if light is not None:
        met = "met" if light <= LOADER_GOAL_MS else "NOT met"
        print(f"  loader: {light:.2f} CPU ms per image, light (goal {LOADER_GOAL_MS} ms: {met})")
    for part, result in (("train", trained), ("predict", predicted)):
        met = "met" if result["ratio"] >= GOALS[part] else "NOT met"
        print(f"  {part}: {result['ratio']:.2f}x the bare loop (goal {GOALS[part]}x: {met})")
    print(f"  sync audit: {'pass' if passed else 'FAIL'}")
    minutes = (time.perf_counter() - started) / 60
    print(f"  the whole check: {minutes:.1f} min (goal under {MINUTES:g} min on one GPU)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
