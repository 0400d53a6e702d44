"""Training: `train_one_epoch`, `validate` and `fit`, which writes and resumes a run folder.

One process on CPU, CUDA or MPS, or several under ``torchrun`` (DistributedDataParallel;
rank 0 alone prints, logs and saves). The run folder layout is in DESIGN.md.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from segtool.core.classes import ClassMap, mode_for, read_classes_json
from segtool.core.constants import CLASSES_FILE, SPLIT_FILE
from segtool.core.dataset import check_pairs, find_pairs
from segtool.core.device import amp_dtype_for, pick_device
from segtool.core.errors import SegtoolError
from segtool.core.files import check_overwrite, remove, write_json
from segtool.core.metrics import Counts
from segtool.core.parallel import default_jobs
from segtool.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from segtool.train.config import RESUMABLE, TrainConfig, parse_channels
from segtool.train.data import (
    SegmentationDataset,
    fingerprint,
    pad_collate,
    resolve_split,
    worker_init,
)
from segtool.train.losses import build_loss
from segtool.train.model import build_model, save_model
from segtool.train.runfolder import draw_curves, package_versions, read_metrics, write_metrics
from segtool.train.steps import NonFiniteLoss, Reporter, scores, train_one_epoch, validate
from segtool.train.transforms import build_augmentation


@dataclass
class FitResult:
    """How a run ended."""

    run: Path
    best_epoch: int
    best_dice: float
    best_per_class: dict[str, float]
    epochs_done: int
    stopped: str  # "finished", "early stop", "interrupted"
    main_process: bool = True  # False on the other ranks of a torchrun job


# --- set-up -------------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a (possibly single-process) distributed run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


def default_workers(device: torch.device) -> int:
    """DataLoader workers: on a GPU up to 4 (cores - 1); on the CPU the model needs every core,
    so none on small machines (loading runs in the main process) and 2 on large ones."""
    cores = default_jobs()
    if device.type == "cpu":
        return 0 if cores <= 4 else 2
    return min(4, max(cores - 1, 0))


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR factor per step: linear warm-up, then cosine decay to 1% of the base rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _prepare_run(out: Path, resume: bool, overwrite: bool, dist: Dist) -> None:
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise SegtoolError(f"{last}: no checkpoint to resume from; train without --resume")
        return
    check_overwrite(out, overwrite, alternative="resume to continue it")
    if out.exists() and dist.main:
        remove(out)
    if dist.world > 1:
        torch.distributed.barrier()


def _resume_config(
    out: Path, given: dict[str, Any], state: dict[str, Any], class_map: ClassMap
) -> TrainConfig:
    saved = dict(state["config"])
    changed = sorted(
        k for k, v in given.items() if v is not None and k not in RESUMABLE and saved.get(k) != v
    )
    if changed:
        raise SegtoolError(
            f"--resume continues {out} with its own settings; --{changed[0].replace('_', '-')} "
            f"differs from the run's ({saved.get(changed[0])!r}); only "
            f"{', '.join(sorted(RESUMABLE))} may change"
        )
    if list(state["class_names"]) != list(class_map.names):
        raise SegtoolError(
            f"{out}: the checkpoint was trained on classes {list(state['class_names'])}, but the "
            f"dataset has {list(class_map.names)}; start a new run (--overwrite or another --out)"
        )
    saved.update({k: v for k, v in given.items() if v is not None and k in RESUMABLE})
    return TrainConfig.from_options(**saved)


def _loader(
    dataset, batch_size, shuffle, workers, device, generator, ignore, sampler=None
) -> DataLoader:
    drop_last = shuffle and len(dataset) % batch_size == 1 and len(dataset) > batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=partial(pad_collate, ignore_index=ignore),
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        worker_init_fn=worker_init if workers else None,
        generator=generator,
        persistent_workers=False,
    )


# --- fit -------------------------------------------------------------------------------------


def fit(
    dataset: Path,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    **options: Any,
) -> FitResult:
    """Train a model on a dataset folder and write the run folder `out`.

    Args:
        dataset: folder with images/, masks/, classes.json and optionally split.json.
        out: the run folder (config.json, classes.json, split.json, model/,
            checkpoints/last.pt, metrics.csv, curves.png).
        resume: continue from ``out/checkpoints/last.pt`` (a larger ``epochs`` extends it).
        overwrite: replace an existing `out`.
        reporter: receives progress; None trains quietly.
        **options: any `TrainConfig` field; None means the default.

    Returns:
        The best epoch, its scores, and how the run stopped.

    Raises:
        SegtoolError: bad data or options, an existing `out`, or a loss that became NaN.
    """
    dist = Dist.from_env()
    if dist.world > 1 and not torch.distributed.is_initialized():
        use_cuda = torch.cuda.is_available() and options.get("device") not in ("cpu", "mps")
        if use_cuda:
            torch.cuda.set_device(dist.local_rank)  # one GPU per process, before NCCL starts
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    reporter = reporter if dist.main and reporter else Reporter()
    classes_path = dataset / CLASSES_FILE
    if not classes_path.is_file():
        raise SegtoolError(
            f"{classes_path}: no class map; rasterize with segtool or add a classes.json"
        )
    class_map = read_classes_json(classes_path)
    _prepare_run(out, resume, overwrite, dist)
    state = load_checkpoint(out / "checkpoints" / "last.pt") if resume else None
    config = (
        _resume_config(out, options, state, class_map)
        if state
        else TrainConfig.from_options(**options)
    )
    config.check()

    pairs, skipped = find_pairs(dataset, skip_unpaired=config.skip_unpaired)
    check_pairs(pairs, class_map)
    if resume:
        from segtool.core.dataset import read_split

        split = read_split(out / SPLIT_FILE, {p.stem for p in pairs})
    else:
        split_file = Path(config.split_file) if config.split_file else None
        split = resolve_split(
            dataset, pairs, split_file, val=config.val, test=config.test, seed=config.seed
        )
    by_stem = {p.stem: p for p in pairs}
    train_pairs = [by_stem[s] for s in split["train"]]
    val_pairs = [by_stem[s] for s in split["val"]]
    if config.batch_size > len(train_pairs):
        raise SegtoolError(
            f"--batch-size {config.batch_size} is larger than the {len(train_pairs)} training "
            f"images; use --batch-size {len(train_pairs)} or less, or add images"
        )

    device = pick_device(config.device, dist.local_rank)
    amp_dtype = amp_dtype_for(device, config.amp)
    channels_last = device.type == "cuda"
    workers = config.workers if config.workers is not None else default_workers(device)
    _seed_all(config.seed)
    mode = mode_for(class_map.num_classes)
    loss_fn = build_loss(
        config.loss,
        mode,
        class_map.ignore_index,
        bce_weight=config.bce_weight,
        dice_weight=config.dice_weight,
        tversky_alpha=config.tversky_alpha,
        tversky_beta=config.tversky_beta,
        focal_gamma=config.focal_gamma,
    )
    model = build_model(
        config.arch,
        config.encoder,
        config.encoder_weights,
        class_map.num_classes,
        decoder_channels=parse_channels(config.decoder_channels),
    )
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    augment = build_augmentation(config.augment, class_map.ignore_index, seed=config.seed)
    train_ds = SegmentationDataset(
        train_pairs,
        class_map,
        size=config.size,
        crop=config.crop,
        fg_crop=config.fg_crop,
        augment=augment,
        normalization=config.normalize,
        seed=config.seed,
    )
    val_ds = SegmentationDataset(
        val_pairs, class_map, size=config.size, normalization=config.normalize
    )
    if dist.world > 1:
        val_ds = Subset(val_ds, list(range(dist.rank, len(val_ds), dist.world)))
    sampler = None
    if dist.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            train_ds, dist.world, dist.rank, shuffle=True, seed=config.seed
        )
    generator = torch.Generator()
    ignore = class_map.ignore_index
    train_loader = _loader(
        train_ds, config.batch_size, True, workers, device, generator, ignore, sampler
    )
    val_loader = _loader(val_ds, config.batch_size, False, workers, device, None, ignore)

    steps_per_epoch = len(train_loader)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, warmup_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    train_model: nn.Module = model
    if dist.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    start_epoch, best_dice, best_epoch, bad_epochs = 1, -math.inf, 0, 0
    best_per_class: dict[str, float] = {}
    rows = read_metrics(out / "metrics.csv") if resume else []
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best_dice, best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        bad_epochs, best_per_class = int(state["bad_epochs"]), dict(state["best_per_class"])
        set_rng_state(state["rng"])
        rows = [r for r in rows if int(r["epoch"]) < start_epoch]

    if dist.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        class_map.save(out / CLASSES_FILE)
        write_json(out / SPLIT_FILE, split)
        write_json(
            out / "config.json",
            {
                "options": asdict(config),
                "dataset": str(dataset.resolve()),
                "dataset_fingerprint": fingerprint(pairs),
                "classes": list(class_map.names),
                "ignore_index": class_map.ignore_index,
                "mode": mode,
                "images": {
                    "train": len(train_pairs),
                    "val": len(val_pairs),
                    "test": len(split["test"]),
                    "skipped_unpaired": len(skipped),
                },
                "device": str(device),
                "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
                "world_size": dist.world,
                "versions": package_versions(),
            },
        )
    reporter.start(
        {
            "device": str(device),
            "amp": amp_dtype,
            "train": len(train_pairs),
            "val": len(val_pairs),
            "epochs": config.epochs,
            "start_epoch": start_epoch,
            "workers": workers,
            "mode": mode,
        }
    )

    stopped = "finished"
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            # Order and augmentation depend on (seed, epoch) alone, so a resumed run repeats
            # exactly what an uninterrupted one would have done.
            epoch_seed = config.seed * 100_003 + epoch
            generator.manual_seed(epoch_seed)
            train_ds.reseed(epoch_seed)
            if sampler is not None:
                sampler.set_epoch(epoch)
            tic = time.perf_counter()
            reporter.epoch_start(epoch, config.epochs, steps_per_epoch)
            lr = optimizer.param_groups[0]["lr"]
            try:
                train_loss = train_one_epoch(
                    train_model,
                    train_loader,
                    loss_fn,
                    optimizer,
                    scheduler,
                    scaler,
                    device,
                    amp_dtype=amp_dtype,
                    clip_grad=config.clip_grad,
                    channels_last=channels_last,
                    reporter=reporter,
                )
            except NonFiniteLoss as exc:
                last = out / "checkpoints" / "last.pt"
                kept = (
                    f"the last good checkpoint is {last}"
                    if last.is_file()
                    else "no checkpoint was written"
                )
                raise NonFiniteLoss(
                    f"epoch {epoch}: {exc}; training stopped and {kept}; lower --lr (now "
                    f"{config.lr}) or keep --clip-grad on"
                ) from None
            loss_sum, counts, n = validate(
                model, val_loader, loss_fn, class_map, device, amp_dtype=amp_dtype
            )
            if dist.world > 1:
                packed = torch.tensor(
                    np.concatenate([counts.tp, counts.fp, counts.fn, [loss_sum, n]]),
                    dtype=torch.float64,
                )
                if torch.distributed.get_backend() == "nccl":  # NCCL reduces GPU tensors only
                    packed = packed.to(device)
                torch.distributed.all_reduce(packed)
                packed = packed.cpu()
                k = class_map.num_classes
                counts = Counts(
                    *(packed[i * k : (i + 1) * k].numpy().astype(np.int64) for i in range(3))
                )
                loss_sum, n = float(packed[-2]), int(packed[-1])
            val = scores(counts, class_map)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": loss_sum / max(n, 1),
                "val_dice": val["dice"],
                "val_iou": val["iou"],
                "lr": lr,
                "seconds": time.perf_counter() - tic,
                **{f"dice_{name}": v for name, v in val["per_class"].items()},
            }
            improved = best_epoch == 0 or val["dice"] > best_dice
            if improved:
                best_dice, best_epoch, bad_epochs = val["dice"], epoch, 0
                best_per_class = val["per_class"]
            else:
                bad_epochs += 1
            rows.append(row)
            if dist.main:
                if improved:
                    save_model(model, out / "model")
                write_metrics(out / "metrics.csv", rows)
                save_checkpoint(
                    out / "checkpoints" / "last.pt",
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch,
                        "best_dice": best_dice,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "best_per_class": best_per_class,
                        "class_names": list(class_map.names),
                        "config": asdict(config),
                        "rng": rng_state(),
                    },
                )
                draw_curves(out / "curves.png", rows)
            reporter.epoch_end(row)
            if config.patience is not None and bad_epochs >= config.patience:
                stopped = "early stop"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        epoch -= 1  # the interrupted epoch did not finish; last.pt holds the one before
        if out.joinpath("checkpoints", "last.pt").is_file():
            epoch = int(load_checkpoint(out / "checkpoints" / "last.pt")["epoch"])
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return FitResult(out, best_epoch, best_dice, best_per_class, epoch, stopped, dist.main)
