"""benchmarks/gpu_check.py stays runnable: its CPU smoke run prints every part's figures, and
without a GPU it says so and exits 0; the benchmarks' steady-state arithmetic by hand."""

from __future__ import annotations

import torch

from benchmarks import gpu_check
from benchmarks.expert import steady_rate


def test_steady_rate_leaves_out_the_warm_up():
    # (seconds, images done): 8 images in the first 10 s (start-up), then 8 every second.
    marks = [(10.0, 8), (11.0, 16), (12.0, 24), (13.0, 32)]
    assert steady_rate(marks, 16) == (8.0, 16)  # from 16 images on: 16 images in 2 s
    assert steady_rate(marks, 0) == (24 / 3, 24)
    assert steady_rate(marks, 1000) == (24 / 3, 24)  # too few marks after it: all of them


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no GPU is present" in capsys.readouterr().out


def test_the_cpu_smoke_run_prints_every_figure(capsys):
    assert gpu_check.main(["--cpu"]) == 0
    out = capsys.readouterr().out
    for part in (
        "1. training loader",
        "2. training",
        "3. predict",
        "4. sync audit",
        "5. predict's writers",
    ):
        assert f"== {part}" in out
    assert out.count("expert bare loop") == 2 and out.count("img/s steady") == 4
    assert " 0.0 img/s" not in out and " 0.00x" not in out  # every rate measured
    assert "train: " in out and "predict: " in out and "x the bare loop (goal" in out
    assert "meta-device audit (tests/test_sync_audit.py): 2 passed" in out
    assert "sync audit: pass" in out
    assert "CPU ms per image, light (goal 1.5 ms" in out and "the whole check: " in out
    assert "nanx" not in out
    assert "masks agree on 100.00% of pixels" in out  # the same model on the CPU: the same labels


def test_the_loaders_goal_reads_the_light_presets_cached_figure():
    figures = """light:
  old (decode + albumentations):     5.07 CPU ms/image
  cached, augmented on the device:   0.32 CPU ms/image  (16.1x less)
strong:
  cached, augmented on the device:   0.41 CPU ms/image  (28.6x less)"""
    assert gpu_check.loader_ms(figures) == 0.32
    assert gpu_check.loader_ms("loader: bench_loader.py failed") is None


def test_the_cuda_audit_runs_its_steps_and_validation(monkeypatch):
    """The GPU audit's own code, on the CPU: the device's synchronisation and sync-debug
    switches stubbed (no warning comes from them here), the steps and the pass real."""
    switched = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", switched.append)
    assert gpu_check.cuda_syncs(torch.device("cpu")) == (0, 0)
    assert switched == ["warn", 0]  # on for the audited calls, off again after
