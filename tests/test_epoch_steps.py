"""Epochs of a fixed number of steps (--epoch-steps, planned on a GPU where one pass over the
training split is short): successive shuffled passes, each draw seeded apart, the same
weights for any worker count and on a resume in the middle of such an epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler
from torch.utils.data.distributed import DistributedSampler

from segtool.core.errors import SegtoolError
from segtool.train import pacing
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import Given
from segtool.train.fingerprint import ClassStats, Fingerprint, Machine
from segtool.train.loaders import SeededSampler, draw_seed, training_sampler
from segtool.train.loop import fit
from segtool.train.plan import plan_training
from segtool.train.sampling import OversampleSampler
from tests.synthetic import make_dataset
from tests.test_budget import StepInterrupt, assert_same_run

#: A small encoder on 32 px patches; 12 training images in batches of 2: 6 steps a pass.
TINY = {"encoder": "tu-resnet10t", "decoder_channels": (16, 16, 16, 16, 16), "workers": 0,
        "batch_size": 2, "crop": 32, "augment": "light", "lr": 3e-3}  # fmt: skip


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("easy"), size=40)


def _epoch(sampler: SeededSampler, epoch: int, seed: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch, seed)
    return list(sampler)


def test_an_epoch_draws_its_steps_from_successive_passes():
    n, draws = 5, 12  # two whole passes and two draws of a third
    sampler = training_sampler(list(range(n)), 0, 1, 0, draws)
    first = _epoch(sampler, 1, 101)
    assert len(sampler) == len(first) == draws
    passes = [first[i : i + n] for i in range(0, draws, n)]
    for drawn in passes[:2]:
        assert sorted(i for i, _ in drawn) == list(range(n))  # each pass a permutation
        assert len({s for _, s in drawn}) == 1  # one pass, one seed
    third = passes[2]
    assert len({i for i, _ in third}) == 2
    # Each pass has its own order and its own seed: an image drawn twice gets two crops.
    assert [i for i, _ in passes[0]] != [i for i, _ in passes[1]]
    assert len({passes[k][0][1] for k in range(3)}) == 3
    # A later pass is ordered from (seed, epoch, pass) alone: by its own seed.
    order = RandomSampler(range(n), generator=torch.Generator().manual_seed(draw_seed(101, 1)))
    assert [i for i, _ in passes[1]] == list(order)
    assert len(set(first)) == draws  # every draw's key is its own
    # The first pass is what an epoch of one pass draws (indices and seeds).
    assert passes[0] == _epoch(training_sampler(list(range(n)), 0, 1, 0), 1, 101)
    # (seed, epoch) alone decide the epoch: again after another epoch, the same.
    second = _epoch(sampler, 2, 102)
    assert second != first
    assert _epoch(sampler, 1, 101) == first
    assert _epoch(training_sampler(list(range(n)), 0, 1, 0, draws), 1, 101) == first


def test_under_torchrun_each_pass_is_shared_out_and_ordered_afresh():
    n, draws = 6, 9  # three indices a pass for each of 2 processes
    ranks = []
    for rank in (0, 1):
        sampler = training_sampler(list(range(n)), rank, 2, 7, draws)
        ranks.append(_epoch(sampler, 3, 11))
        assert len(ranks[-1]) == draws
    for p in range(3):
        shares = [i for drawn in ranks for i, _ in drawn[3 * p : 3 * p + 3]]
        assert sorted(shares) == list(range(n))  # every pass shared out whole
    orders = [[i for i, _ in ranks[0][3 * p : 3 * p + 3]] for p in range(3)]
    plain = DistributedSampler(list(range(n)), 2, 0, shuffle=True, seed=7)
    plain.set_epoch(3)
    assert orders[0] == list(plain)  # the first pass is the epoch's own order
    assert len({tuple(o) for o in orders}) > 1
    assert len({key for drawn in ranks for key in drawn}) == 2 * draws


def test_oversampled_epochs_give_every_draw_its_own_key():
    generator = torch.Generator()
    chances = np.array([0.7, 0.1, 0.1, 0.1])  # image 0 drawn many times in every pass
    sampler = SeededSampler(OversampleSampler(chances, generator), generator, draws=20)
    drawn = _epoch(sampler, 1, 5)
    assert len(drawn) == 20 and sum(i == 0 for i, _ in drawn) > 4
    assert len(set(drawn)) == 20
    assert _epoch(sampler, 1, 5) == drawn


def test_epochs_of_more_steps_than_a_pass_give_the_same_weights_with_0_and_2_workers(
    easy, tmp_path
):
    weights = []
    for workers in (0, 2):
        fit(easy, tmp_path / f"w{workers}", epochs=2, epoch_steps=8, **{**TINY, "workers": workers})
        state = load_checkpoint(tmp_path / f"w{workers}/checkpoints/last.pt")
        steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
        assert steps == {16}  # 2 epochs of 8 steps, though a pass is 6
        weights.append(state["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_in_the_second_pass_of_an_epoch_matches_an_uninterrupted_run(
    easy, tmp_path, monkeypatch
):
    options = {**TINY, "epochs": 2, "epoch_steps": 9}
    fit(easy, tmp_path / "straight", **options)
    monkeypatch.setattr(pacing, "SAVE_EVERY", 0.0)  # a checkpoint before every step
    StepInterrupt(16).install(monkeypatch)  # epoch 2's 7th step: its second pass
    stopped = fit(easy, tmp_path / "resumed", **options)
    assert (stopped.epochs_done, stopped.saved_steps) == (1, 6)
    monkeypatch.undo()
    resumed = fit(easy, tmp_path / "resumed", resume=True)
    assert resumed.epochs_done == 2 and resumed.stopped == "finished"
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    with pytest.raises(SegtoolError, match="--epoch-steps differs from the run's"):
        fit(easy, tmp_path / "resumed", resume=True, epochs=3, epoch_steps=6)


def _fingerprint(n: int) -> Fingerprint:
    return Fingerprint(n, (64, 64), (64, 64), 3, [ClassStats("a", 0.3, n, 500.0)])


CUDA = Machine("cuda", "H100", 80.0, 16)
CPU = Machine("cpu", "x86_64", 8.0, 2)


def _planned(machine: Machine, n: int = 200, **given) -> dict:
    return plan_training(_fingerprint(n), machine, Given.parse(**given)).options()


def test_the_plan_makes_gpu_epochs_of_250_steps_and_fewer_of_them():
    # 140 training images in batches of 8: 18 steps a pass; 167 epochs of them make the
    # 3,000 steps a GPU aims for, 12 epochs of 250 steps do too (3,006 / 250 = 12.02).
    assert _planned(CUDA)["epoch_steps"] == 250 and _planned(CUDA)["epochs"] == 12
    # An MPS aims for 1,500 (84 passes: 1,512): 10 epochs of 151 steps keep the fewest.
    mps = Machine("mps", "Apple", 16.0, 8)
    assert (_planned(mps)["epoch_steps"], _planned(mps)["epochs"]) == (151, 10)
    # A pass of 250 steps or more, the CPU, given epochs or a time budget: one pass.
    assert "epoch_steps" not in _planned(CUDA, n=3000)
    assert "epoch_steps" not in _planned(CPU) and _planned(CPU)["epochs"] == 10
    # 40 images on a CPU: 7 steps a pass, 43 epochs of them (300 steps), still one pass.
    assert "epoch_steps" not in _planned(CPU, n=40) and _planned(CPU, n=40)["epochs"] == 43
    assert "epoch_steps" not in _planned(CUDA, epochs=50)
    assert "epoch_steps" not in _planned(CUDA, time_budget="10m")
    # Given: kept, and the planned epochs count in its steps (300 / 100 -> the fewest, 10).
    given = _planned(CPU, epoch_steps=100)
    assert (given["epoch_steps"], given["epochs"]) == (100, 10)
    assert _planned(CUDA, epoch_steps=0)["epoch_steps"] == 0  # one pass, given
    assert _planned(CUDA, epoch_steps=0)["epochs"] == 167


def test_the_validation_interval_counts_an_epochs_real_steps():
    # 1,000 training images in batches of 8: 125 steps a pass; 125 validation batches at half
    # a step: against 125 steps every 5th epoch keeps validation near 10 %, against 250 every
    # 3rd (62.5 / (3 * 250 + 62.5) = 7.7 %, 2 epochs: 11 %).
    shares = {"val": 0.5, "test": 0.0, "batch_size": 8, "epochs": 100}
    assert _planned(CUDA, n=2000, **shares)["val_every"] == 5
    assert _planned(CUDA, n=2000, epoch_steps=250, **shares)["val_every"] == 3
