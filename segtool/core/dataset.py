"""Which images and masks of a dataset folder belong together, and which split each is in."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from segtool.core.classes import ClassMap
from segtool.core.constants import IMAGE_SUFFIXES, IMAGES_DIR, MASK_SUFFIX, MASKS_DIR
from segtool.core.errors import InvalidInputError, SegtoolError, check_choice
from segtool.core.files import list_files, read_json
from segtool.core.names import name_key, spelled_apart, spellings, twin_note, twins
from segtool.core.parallel import ProgressFn, imap_jobs, jobs_for, with_progress

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    """One training example: an image and its label mask, sharing a file stem."""

    stem: str
    image: Path
    mask: Path


def index_by_stem(
    paths: list[Path], why: str, key: Callable[[Path], str] | None = None
) -> dict[str, Path]:
    """Map file stem (or `key`, e.g. a volume's case name) -> path, refusing two files with one
    name (``a.nii`` and ``a.nii.gz``) or names that differ only in case (`why` says why that
    matters).

    Raises:
        SegtoolError: naming both files.
    """
    files: dict[str, Path] = {}
    folded: dict[str, Path] = {}
    name_of = key or (lambda path: path.stem)
    for path in paths:
        name = name_of(path)
        other = folded.get(name_key(name))
        if other is not None and name_of(other) == name:
            raise SegtoolError(f"{path}: same stem as {other}; {why}, so keep one")
        if other is not None and spelled_apart(name_of(other), name):
            raise SegtoolError(f"{path} and {other}: {spellings(name_of(other), name)}")
        if other is not None:
            raise SegtoolError(
                f"{path} and {other}: stems that differ only in case; {why} and a "
                f"case-insensitive disk (macOS, Windows) cannot tell them apart, so rename one"
            )
        files[name] = path
        folded[name_key(name)] = path
    return files


def is_hidden(path: Path) -> bool:
    """Hidden files (``.DS_Store``, macOS's ``._x.png`` resource forks) are never data."""
    return path.name.startswith(".")


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return index_by_stem(list_files(folder, suffixes), "pairs are made by file stem")


def _no_image(mask: Path, stem: str, images_dir: Path) -> str:
    others = sorted(
        p.name for p in images_dir.glob(f"{stem}.*") if p.suffix.lower() not in IMAGE_SUFFIXES
    )
    if others:
        return (
            f"{mask}: its image {images_dir / others[0]} is not in a format segtool reads "
            f"({', '.join(IMAGE_SUFFIXES)}); convert it"
        )
    return f"{mask}: no image {stem}.* in {images_dir}"


def check_dataset_folder(dataset: Path) -> None:
    """Refuse, naming the folder to pass, what a user easily gives for a dataset folder: a
    path that does not exist, a file in it (split.json, an image), or its ``images/`` or
    ``masks/`` folder.

    Raises:
        SegtoolError: `dataset` is one of those.
    """
    if dataset.is_file():
        raise SegtoolError(
            f"{dataset}: a file; pass the dataset folder (the one holding images/ and masks/)"
        )
    if not dataset.is_dir():
        raise SegtoolError(f"{dataset}: no such dataset folder; check the path")
    parent = dataset.parent
    if dataset.name in (IMAGES_DIR, MASKS_DIR) and all(
        (parent / d).is_dir() for d in (IMAGES_DIR, MASKS_DIR)
    ):
        raise SegtoolError(f"{dataset}: the {dataset.name}/ folder of a dataset; pass {parent}")


def find_pairs(
    dataset: Path, *, skip_unpaired: bool = False, images_dir: Path | None = None
) -> tuple[list[Pair], list[str]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.png`` in a dataset folder.

    Args:
        dataset: folder with ``images/`` and ``masks/``.
        skip_unpaired: skip (and report) images without masks and masks without images
            instead of failing.
        images_dir: where the images are, when not in ``dataset/images``.

    Returns:
        (pairs sorted by stem, one line per skipped file).

    Raises:
        SegtoolError: not a dataset folder (`check_dataset_folder`), a folder is missing,
            nothing pairs up, or files are unpaired.
    """
    check_dataset_folder(dataset)
    images_dir = images_dir or dataset / IMAGES_DIR
    masks_dir = dataset / MASKS_DIR
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise SegtoolError(
                f"{folder}: no such folder; a dataset has images/ and masks/ (segtool rasterize "
                f"writes one)"
            )
    images = _by_stem(images_dir, IMAGE_SUFFIXES)
    masks = _by_stem(masks_dir, (MASK_SUFFIX,))
    mask_twins = twins(masks)
    lonely = [
        f"{images[s]}: no mask {masks_dir / (s + MASK_SUFFIX)}{twin_note(s, mask_twins)}"
        for s in sorted(images.keys() - masks.keys())
    ]
    lonely += [_no_image(masks[s], s, images_dir) for s in sorted(masks.keys() - images.keys())]
    lonely.sort(key=lambda line: "Unicode" not in line)  # the baffling ones first
    pairs = [Pair(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
    if not pairs:
        raise SegtoolError(
            f"{dataset}: no image/mask pairs (images {len(images)}, masks {len(masks)}); images "
            f"and masks are paired by file stem"
        )
    if lonely and not skip_unpaired:
        raise SegtoolError(
            f"{len(lonely)} unpaired file(s), e.g. {lonely[0]}; add the missing files or pass "
            f"--skip-unpaired"
        )
    return pairs, lonely


def read_split(path: Path, stems: set[str] | None = None) -> dict:
    """Read a ``split.json``, checking its layout (and, given `stems`, that its files exist).

    Raises:
        SegtoolError: unreadable file, bad layout, a stem in two splits or not in the dataset.
    """
    doc = read_json(path, "split.json", "re-run segtool split")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in SPLIT_NAMES):
        raise SegtoolError(f'{path}: needs "train", "val" and "test" lists; re-run segtool split')
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for stem in doc[name]:
            if stem in seen:
                raise SegtoolError(
                    f"{path}: {stem!r} is in both {seen[stem]} and {name}; fix the split"
                )
            seen[stem] = name
    _check_folds(doc, path)
    if stems is not None:
        unknown = sorted(seen.keys() - stems)
        if unknown:
            raise SegtoolError(
                f"{path}: names {len(unknown)} image(s) not in the dataset, e.g. {unknown[0]!r}; "
                f"re-run segtool split --overwrite"
            )
    return doc


def _check_folds(doc: dict, path: Path) -> None:
    """Refuse a ``"folds"`` entry (``segtool split --folds``) that is not lists of names, names
    one twice, holds a test image, or differs from train + val."""
    folds = doc.get("folds")
    if folds is None:
        return
    fix = "re-run segtool split --folds K --overwrite"
    if not isinstance(folds, list) or not all(isinstance(f, list) for f in folds):
        raise SegtoolError(f'{path}: "folds" must be a list of lists of names; {fix}')
    seen: dict[str, int] = {}
    for i, stems in enumerate(folds):
        for stem in stems:
            if stem in seen:
                raise SegtoolError(f"{path}: {stem!r} is in folds {seen[stem]} and {i}; {fix}")
            seen[stem] = i
    for stem in doc["test"]:
        if stem in seen:
            raise SegtoolError(f"{path}: {stem!r} is in test and in fold {seen[stem]}; {fix}")
    differ = sorted(seen.keys() ^ (set(doc["train"]) | set(doc["val"])))
    if differ:
        raise SegtoolError(
            f"{path}: {differ[0]!r} is in a fold but not in train or val, or the other way "
            f"round; {fix}"
        )


def split_stems(split: dict | None, name: str, source: Path) -> set[str]:
    """The stems of split `name` of a split document read by `read_split`.

    Args:
        split: the document, or None when `source` has no split.json.
        name: ``train``, ``val`` or ``test``.
        source: the folder the split belongs to, for the message.

    Raises:
        SegtoolError: no split.json, or an unknown split name.
    """
    if split is None:
        raise SegtoolError(f"{source}: no split.json (not a run folder); drop --split")
    check_choice("split", name, SPLIT_NAMES)
    return set(split[name])


def held_out_stems(split: dict | None, name: str, source: Path, available: set[str]) -> set[str]:
    """The stems of `available` that split `name` of a run names; ``all`` is every stem the
    run was not trained on, so a score never includes a training image.

    Args:
        split: the run's split document, or None when the run has no split.json.
        name: ``train``, ``val``, ``test`` or ``all``.
        source: the run folder, for the message.
        available: the stems (images or cases) the folder being scored holds.

    Raises:
        SegtoolError: ``all`` for a run without split.json (its training images are unknown),
            or as `split_stems`.
    """
    if name != "all":
        return split_stems(split, name, source) & available
    if split is None:
        raise SegtoolError(
            f"{source}: no split.json, so segtool cannot tell which images the model was "
            f"trained on and --split all would score them; pass --split with a run that has "
            f"its split.json, or evaluate predictions with segtool evaluate PRED GT"
        )
    return available - set(split["train"])


def _check_pair(
    pair: Pair, num_classes: int, ignore_index: int, multilabel: bool = False
) -> tuple[str | None, bool, bool]:
    """(the problem with a pair or None, has foreground, has ignore pixels); runs in a worker.

    The image is decoded in full: a file whose header and end marker are intact but whose data
    is corrupt would otherwise pass, then stop training in its first epoch.
    """
    # Imported here: rasterize pairs files by stem through this module and needs neither
    # numpy nor OpenCV.
    import numpy as np

    from segtool.core.finite import non_finite_problem
    from segtool.core.images import ImageReadError, displayed_size, open_image
    from segtool.core.masks import read_mask
    from segtool.core.metrics import MaskValueError, check_values
    from segtool.core.multilabel import read_multilabel_values

    try:
        width, height, _ = displayed_size(pair.image, verify=False)
        with open_image(pair.image) as img:
            img.load()
            problem = non_finite_problem(np.asarray(img), "pixel") if img.mode == "F" else None
        if problem:
            return f"{pair.image}: {problem}", False, False
    except ImageReadError as exc:
        return f"{pair.image}: {exc}", False, False
    except (OSError, ValueError, SyntaxError) as exc:
        return f"{pair.image}: the image data is damaged ({exc}); re-export it", False, False
    try:
        if multilabel:  # checks the depth and every bit against the map
            mask = read_multilabel_values(pair.mask, num_classes)
        else:
            mask = read_mask(pair.mask)
    except SegtoolError as exc:
        return str(exc), False, False
    if mask.shape != (height, width):
        problem = (
            f"{pair.image} is {width}x{height} but its mask {pair.mask} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); re-rasterize the mask"
        )
        return problem, False, False
    if multilabel:
        return None, True, False
    try:
        check_values(mask, num_classes, ignore_index)
    except MaskValueError as exc:
        return f"{pair.mask}: {exc}; fix the mask or the class map", False, False
    ignored = mask == ignore_index
    foreground = bool(((mask != 0) & ~ignored).any())
    return None, foreground, bool(ignored.any())


def check_pairs(
    pairs: list[Pair],
    class_map: ClassMap,
    jobs: int | None = None,
    on_progress: ProgressFn | None = None,
) -> None:
    """Check every pair before training: readable (every image decoded), same size, mask
    values in the class map, and not 0/255 masks made elsewhere. `on_progress` is called as
    each pair is checked ("checking the pairs").

    Raises:
        InvalidInputError: listing every bad pair.
        SegtoolError: masks that hold only 0 and the ignore value 255.
    """
    work = partial(
        _check_pair,
        num_classes=class_map.num_classes,
        ignore_index=class_map.ignore_index,
        multilabel=class_map.multilabel,
    )
    if jobs is None:  # worker start-up costs more than a few hundred checks
        jobs = jobs_for(len(pairs))
    checked = imap_jobs(work, pairs, jobs)
    results = list(with_progress(checked, "checking the pairs", len(pairs), on_progress))
    problems = [problem for problem, _, _ in results if problem]
    if problems:
        raise InvalidInputError(
            f"{len(problems)} of {len(pairs)} training pairs are invalid", problems
        )
    if not any(fg for _, fg, _ in results) and any(ig for _, _, ig in results):
        from segtool.core.masks import binary_255_error

        error = binary_255_error(pairs[0].mask.parent, class_map.ignore_index)
        if error:
            raise error


def files_digest(pairs: list[Pair], *, times: bool = True) -> str:
    """A hash of the dataset's file names, sizes and (with `times`) modification times."""
    digest = hashlib.sha256()
    for pair in pairs:
        for path in (pair.image, pair.mask):
            st = path.stat()
            when = st.st_mtime_ns if times else ""
            digest.update(f"{path.name}\0{st.st_size}\0{when}\n".encode())
    return digest.hexdigest()[:16]


def split_pairs(pairs: list[Pair], split: dict) -> list[Pair]:
    """The pairs a split names (train, val and test)."""
    named = {stem for name in SPLIT_NAMES for stem in split[name]}
    return [p for p in pairs if p.stem in named]
