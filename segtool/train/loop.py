"""`fit`: train a model on a dataset folder and write (or resume) its run folder; and
`preview_plan`, the plan `fit` would make (``--plan-only``).

`fit` reads as its steps: the options parsed once into a `TrainConfig`, the run folder
checked as an output, the config chosen (`planning.choose_config`), then a `Trainer` runs
its hooks into the run folder (built beside `out` for a new run, moved in at the end). One
process on CPU, CUDA or MPS, or several under ``torchrun`` (rank 0 alone prints, logs and
saves). The run folder is described in docs/architecture.md.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from segtool.core.files import remove
from segtool.core.lock import lock_folder
from segtool.core.swap import temp_name
from segtool.sources.volume_folder import is_volume_folder
from segtool.train.budget import Budget
from segtool.train.build import check_config
from segtool.train.checkpoint import load_checkpoint
from segtool.train.config import Given, TrainConfig
from segtool.train.distributed import Dist, start
from segtool.train.losses import check_class_weights
from segtool.train.planning import (
    Planned,
    choose_config,
    dataset_classes,
    plan_run,
    training_classes,
)
from segtool.train.runfolder import RunFolder, check_run_output, publish_run
from segtool.train.steps import Reporter
from segtool.train.trainer import FitResult, Setup, Trainer

__all__ = ["FitResult", "fit", "preview_plan"]


def fit(
    dataset: Path,
    out: Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    clock: float | None = None,
    **options: Any,
) -> FitResult:
    """Train a model on a dataset folder and write the run folder `out`.

    Args:
        dataset: folder with images/, masks/, classes.json and optionally split.json (or a
            volume folder).
        out: the run folder (config.json, classes.json, split.json, model/,
            checkpoints/last.pt, metrics.csv, curves.png).
        config: the whole config, used as it is (nothing is planned); or None, and the
            `options` given build it, the plan choosing the others.
        resume: continue from ``out/checkpoints/last.pt``; a different ``epochs`` extends or
            shortens it, the learning rate continuing smoothly from where it is (or warming
            up again with ``warm_restart``).
        overwrite: replace an existing `out`.
        reporter: receives progress; None trains quietly.
        clock: `time.monotonic()` when the user started the run (``time_budget`` counts
            from it; default: now).
        **options: `TrainConfig` fields, as values or as the text users type (``size="256,448"``,
            ``time_budget="10m"``); None means planned (or the default). Not with `config`.

    Returns:
        The best epoch, its scores, and how the run stopped.

    Raises:
        SegtoolError: bad data or options, an existing `out`, or a loss that became NaN.
        TypeError: an unknown option, or options beside a `config`.
    """
    if config is not None and options:
        raise TypeError(f"fit takes a config or options, not both: {sorted(options)}")
    clock = time.monotonic() if clock is None else clock
    given = Given(config, frozenset()) if config is not None else Given.parse(**options)
    dist = start(given.config.device)
    reporter = reporter if dist.main and reporter else Reporter()
    class_map = dataset_classes(dataset)
    outputs = check_run_output(out, dataset, given.config.split_file, resume, overwrite)
    _lock = lock_folder(out, "run") if dist.main else None  # one writer: held until fit ends
    state = load_checkpoint(RunFolder(out).last_checkpoint) if resume else None
    class_map, regions = training_classes(class_map, given, state)
    if state is None and config is None:
        what = "cases (their headers)" if is_volume_folder(dataset) else "images and masks"
        reporter.phase(f"measuring {dataset}'s {what}, and the machine, to plan the run")
    budget = Budget(given.config.time_budget, clock)  # checked while the data is measured
    plan = partial(plan_run, on_progress=budget.on_progress) if config is None else None
    chosen, planned, record = choose_config(
        dataset, out, state, class_map, regions, given, plan, dist
    )
    check_config(chosen)
    check_class_weights(chosen.loss, chosen.class_weights, class_map)
    # Checked; only now is anything written. A new run is built beside `out` (its data cache
    # too) and moved in at the end: an --overwrite'd run stays whole until the new one completes.
    fresh, run_dir = outputs is not None and not os.path.lexists(out), out
    if outputs is not None:
        outputs.owner = os.getppid() if dist.world > 1 else os.getpid()  # one name for all ranks
        run_dir = temp_name(out, pid=outputs.owner)
        outputs = outputs if dist.main else None  # rank 0 alone writes
        if outputs is not None:
            outputs.start()
    setup = Setup(dataset, out, RunFolder(run_dir), chosen, class_map, regions, state, record)
    trainer = Trainer(
        setup, reporter, dist, _budget(chosen, clock, planned, given, config is not None)
    )
    try:
        result = trainer.run_training()
    except BaseException as exc:
        if isinstance(exc, OSError) and outputs is not None:
            outputs.name_outputs(exc)
        publish_run(outputs, run_dir, keep=fresh)  # a new run that saved an epoch stays
        raise
    result.kept = publish_run(outputs, run_dir, keep=fresh or result.stopped != "interrupted")
    return result


def _budget(
    config: TrainConfig, clock: float, planned: Planned | None, given: Given, whole: bool
) -> Budget:
    """The run's time budget; a new planned run's epochs are still to be fitted to it. The
    epochs the user gave (``--epochs``, or those of a `whole` config) are the most it trains."""
    most = config.epochs if whole or "epochs" in given.names else None
    if planned is None or not config.time_budget or not planned.fits_first_steps:
        return Budget(config.time_budget, clock, most_epochs=most)
    return Budget(config.time_budget, clock, planned.plan, planned.fingerprint, most_epochs=most)


def preview_plan(dataset: Path, *, clock: float | None = None, **options: Any) -> Planned:
    """The plan `fit` makes for a new run on `dataset` under `options`, without training
    (``--plan-only``); with a ``time_budget`` it builds the run and times its first steps,
    as `fit` does, and writes nothing. The planned config is checked as `fit` checks it: a
    plan shown is a plan that runs.

    Raises:
        SegtoolError: bad data or options.
    """
    clock = time.monotonic() if clock is None else clock
    given = Given.parse(**options)
    class_map, regions = training_classes(dataset_classes(dataset), given, None)
    early = Budget(given.config.time_budget, clock)
    planned = plan_run(dataset, class_map, regions, given, early.on_progress)
    check_config(planned.config)
    check_class_weights(planned.config.loss, planned.config.class_weights, class_map)
    if planned.config.time_budget and planned.fits_first_steps:
        # The data is built as the run builds it: a decoded cache on disk goes to a scratch
        # folder (not the folder the command runs in), removed with what is in it.
        scratch = Path(tempfile.mkdtemp(prefix="segtool-plan-"))
        setup = Setup(dataset, dataset, RunFolder(scratch), planned.config, class_map, regions)
        budget = _budget(planned.config, clock, planned, given, False)
        trainer = Trainer(setup, Reporter(), Dist(), budget)
        try:
            trainer.build(trainer.budget.on_progress)
            trainer.fit_budget()
        finally:
            if trainer.run is not None:
                trainer.run.loaders.close()  # no worker reads the scratch folder any more
            remove(scratch)
        planned.config = trainer.config
        check_config(planned.config)
    return planned
