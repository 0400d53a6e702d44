from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from segtool.cli.common import (
    err_console,
    flag,
    load_torch,
    max_pixels_option,
    note,
    path_argument,
    path_option,
    refuse_image_options,
    use_max_pixels,
    with_default,
)
from segtool.cli.train_options import (  # noqa: F401  (the choices: tests keep them in step)
    AUGMENT_ON,
    AUGMENTS,
    AXES,
    DEFAULTS,
    LOSSES,
    NORMALIZE,
    OPTIONS,
    PANELS,
    RUN,
    Opt,
)
from segtool.train.config import PLANNED


def _help(name: str, opt: Opt) -> str:
    """The help of the field `name`, ending in its default: planned (`PLANNED`), else what the
    table says, else the dataclass's (none for None and for on/off flags)."""
    default = getattr(DEFAULTS, name)
    if name in PLANNED:
        return with_default(opt.help, "planned")
    if opt.shown is not None:
        return with_default(opt.help, opt.shown)
    if default is None or isinstance(default, bool):
        return opt.help
    return with_default(opt.help, default)


def _parameter(name: str, opt: Opt) -> inspect.Parameter:
    """The typer parameter of the field `name`: unset, it stays None (the plan or the config
    decides)."""
    option = "--" + name.replace("_", "-")
    kind = Literal[opt.kind] if isinstance(opt.kind, tuple) else opt.kind
    if kind is bool and getattr(DEFAULTS, name) is False:  # an on/off flag
        info = flag(option, _help(name, opt), rich_help_panel=opt.panel)
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, info]
        )
    info = typer.Option(
        f"{option}/--no-{option[2:]}" if kind is bool else option,
        help=_help(name, opt),
        rich_help_panel=opt.panel,
        metavar=opt.metavar,
        parser=opt.parser,
        min=opt.min,
        max=opt.max,
        show_default=False,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )


def _run_options(
    dataset: Annotated[
        Path,
        path_argument(
            "DATASET",
            "Dataset folder (images/, masks/, classes.json), or a volume folder "
            "(dataset.json, imagesTr/, labelsTr/: trained on 2-D slices).",
        ),
    ],
    out: Annotated[
        Path, path_option("--out", help="Run folder to write.", metavar="RUN", rich_help_panel=RUN)
    ],
    resume: Annotated[
        bool,
        flag(
            "--resume", "Continue the run in --out from its last checkpoint.", rich_help_panel=RUN
        ),
    ] = False,
    overwrite: Annotated[
        bool, flag("--overwrite", "Replace --out if it exists.", rich_help_panel=RUN)
    ] = False,
    max_pixels: Annotated[int | None, max_pixels_option(rich_help_panel=RUN)] = None,
    plan_only: Annotated[
        bool,
        flag("--plan-only", "Print the plan and stop (nothing is written).", rich_help_panel=RUN),
    ] = False,
) -> None:
    """The options of segtool train that are not the config's (the run's place, its start and
    its stop): the first part of `command`'s signature."""


def command(**given: Any) -> None:
    """Train a segmentation model and write the run folder.

    The run folder gets model/ (the best model by validation Dice), checkpoints/last.pt,
    metrics.csv, curves.png, config.json, classes.json and split.json. Validation Dice is
    computed every epoch (or every --val-every K, and after the last) by the same code as
    segtool evaluate. Ctrl-C stops cleanly; --resume continues.

    With no options, segtool plans the run from the dataset and the machine (input size,
    encoder, batch size, augmentation, epochs) and prints the plan: each choice and why. Any
    option you give wins over the plan.

    example:
      segtool train dataset/ --out run/ --time-budget 10m
    """
    run = {name: given.pop(name) for name in inspect.signature(_run_options).parameters}
    options: dict[str, Any] = {}
    for name, value in given.items():
        convert = OPTIONS[name].to_config
        if value is False:  # an on/off flag not given: unset, as every option not given
            value = None
        options[name] = convert(value) if convert and value is not None else value
    _train(run, options)


command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(_run_options, eval_str=True).parameters.values()
        ),
        *(_parameter(name, opt) for name, opt in OPTIONS.items()),
    ]
)


def _refuse_options(run: dict[str, Any], options: dict[str, Any]) -> bool:
    """Options given for the other kind of dataset are refused, not ignored: a volume folder
    trains on standardised slices (no resize, ImageNet statistics, unpaired files or pixel
    limit), an image dataset has no axis or slice cache. Returns whether it is volumes."""
    from segtool.sources.volume_folder import is_volume_folder

    volumes = is_volume_folder(run["dataset"])
    given = {f"--{name.replace('_', '-')}": options.get(name) is not None for name in options}
    given["--max-pixels"] = run["max_pixels"] is not None
    for_images = ("--size", "--resize", "--normalize", "--skip-unpaired", "--max-pixels")
    names = for_images if volumes else ("--axis", "--cache")
    refuse_image_options(*((n, given.get(n, False)) for n in names), volumes=volumes)
    return volumes


def _train(run: dict[str, Any], options: dict[str, Any]) -> None:
    """Plan and train (or, with --plan-only, print the plan), then print the best epoch."""
    from rich.console import Console

    from segtool.cli import train_progress as shown

    clock = shown.process_start()
    load_torch()
    from segtool.train.loop import fit

    use_max_pixels(run["max_pixels"])
    volumes = _refuse_options(run, options)
    if run["plan_only"]:
        from segtool.train.loop import preview_plan

        planned = preview_plan(run["dataset"], clock=clock, **options)
        Console(soft_wrap=True).print(shown.plan_table(planned.plan.to_json()))
        return
    reporter = shown.RichReporter(err_console(), options["time_budget"], started=clock)
    reporter.items = "cases" if volumes else "images"
    checkpoint = run["out"] / "checkpoints" / "last.pt"
    before = shown.file_stamp(checkpoint)
    try:
        result = fit(
            run["dataset"],
            run["out"],
            resume=run["resume"],
            overwrite=run["overwrite"],
            reporter=reporter,
            clock=clock,
            **options,
        )
    except Exception as exc:
        from segtool.train.steps import NonFiniteLoss

        # An error after this run saved a checkpoint (not the one an --overwrite kept): the
        # run is resumable once the cause is fixed. A NaN loss names its checkpoint itself.
        if not isinstance(exc, NonFiniteLoss) and shown.file_stamp(checkpoint) not in (
            None,
            before,
        ):
            note(f"{run['out']}/checkpoints/last.pt holds the run's last complete step "
                 f"interval; once fixed, continue with: {shown.resume_line(run['dataset'], run['out'])}")  # fmt: skip
        raise
    if result.main_process:  # rank 0 alone reports
        shown.print_result(result, run["dataset"], run["out"])
        _choose_postprocessing(run["out"], run["dataset"], options)


def _choose_postprocessing(out: Path, dataset: Path, options: dict[str, Any]) -> None:
    """Choose the finished run's post-processing on its validation split, and print it."""
    from segtool.cli.common import progress_bar
    from segtool.cli.postprocess_table import print_postprocess
    from segtool.evaluate.postprocess import choose_postprocessing

    with progress_bar() as on_progress:
        choice = choose_postprocessing(
            out, dataset, device=options.get("device") or "auto", on_progress=on_progress
        )
    print_postprocess(choice.document, choice.path)
