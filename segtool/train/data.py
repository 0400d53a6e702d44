"""The one dataset module: pairs -> checked, split, loaded, cropped, augmented tensors.

Every step that reads training data (train's loaders, validation, the benchmarks) goes
through `SegmentationDataset`, which returns ``{"image": tensor (3, H, W), "mask": tensor (H, W),
"stem": str}`` (uint8 images and masks where the values fit, made float and int64 on the device
by `to_model_input` and `to_model_target`); augmentation is a parameter.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segtool.core.classes import ClassMap
from segtool.core.constants import SPLIT_FILE
from segtool.core.dataset import Pair, read_split
from segtool.core.errors import SegtoolError, check_choice
from segtool.core.images import load_rgb
from segtool.core.masks import read_mask
from segtool.core.metrics import MaskValueError, check_values
from segtool.core.multilabel import read_multilabel_values
from segtool.core.regions import Regions
from segtool.split.assign import make_split
from segtool.split.folds import fold_split
from segtool.train.config import TrainConfig
from segtool.train.geometry import STRIDE, parse_size, resize_pair
from segtool.train.transforms import Transform

if TYPE_CHECKING:
    from segtool.train.decoded import DecodedCache, ForegroundIndex, Geometry

#: ImageNet channel statistics (RGB, on 0..1 values), what pretrained encoders expect.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
NORMALIZATIONS = ("imagenet", "image")


def normalize(image: np.ndarray, mode: str) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> ``(3, H, W)`` model input, in two halves.

    ``imagenet``: stays uint8 here; `to_model_input` applies the ImageNet statistics on the
    device, so a quarter of the bytes cross to the GPU. ``image``: per image and channel to
    mean 0 / std 1 (as MRI pipelines do), float32, done here because padding must not count.
    """
    if mode == "imagenet":
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    check_choice("normalize", mode, NORMALIZATIONS)
    x = image.astype(np.float32) / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    std = x.std(axis=(0, 1), keepdims=True)
    x = (x - mean) / np.maximum(std, 1e-6)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


#: ImageNet statistics as 0..255 values, made on each device once (`_imagenet_stats`).
_STATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet mean and standard deviation as ``(1, 3, 1, 1)`` tensors on `device`, made
    there once per process: filled in place from numbers, so no step copies them from the
    host (a copy from pageable memory would wait for the device on every batch)."""
    stats = _STATS.get(device)
    if stats is None:
        mean, std = torch.empty(3, device=device), torch.empty(3, device=device)
        for c in range(3):
            mean[c] = float(IMAGENET_MEAN[c]) * 255
            std[c] = float(IMAGENET_STD[c]) * 255
        stats = _STATS[device] = (mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1))
    return stats


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch from `normalize`/`pad_collate` as float32 on `device` (uint8 batches get the
    ImageNet statistics there); the copy does not wait (pinned batches overlap it)."""
    x = images.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        mean, std = _imagenet_stats(x.device)
        x = (x.float() - mean) / std
    return x


def to_model_target(masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of masks from `pad_collate` (uint8 where the values fit: an eighth of the bytes
    of int64 cross to the device) as int64 on `device`, what the losses and counts take."""
    return masks.to(device, non_blocking=True).long()


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """A mask as the loaders carry it: uint8 stays uint8 (converted on the device by
    `to_model_target`), anything wider becomes int64."""
    if mask.dtype != np.uint8:
        return torch.from_numpy(mask.astype(np.int64))
    return torch.from_numpy(np.require(mask, requirements=("C", "W")))  # a read-only cache: copied


def resolve_split(
    dataset: Path,
    pairs: list[Pair] | list[str],
    split_file: Path | None = None,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    fold: int | None = None,
) -> dict:
    """The split to train with: `split_file`, else ``DATASET/split.json``, else a new one made
    by the function `segtool split` uses (the caller saves it into the run). `pairs` may be
    names instead (the cases of a volume folder). With `fold`, the split must have folds
    (``segtool split --folds K``): the other folds train and fold `fold` validates
    (`segtool.split.folds.fold_split`; the run's split.json records ``"fold"``).

    Raises:
        SegtoolError: the split names images that are not in the dataset, or leaves no
            training or validation images; `fold` without folds or out of range.
    """
    stems = {p if isinstance(p, str) else p.stem for p in pairs}
    path = split_file or dataset / SPLIT_FILE
    if split_file is not None and not split_file.is_file():
        raise SegtoolError(f"--split-file {split_file}: no such file; run segtool split first")
    if fold is not None and not path.is_file():
        raise SegtoolError(
            f"--fold {fold}: {path} does not exist; run segtool split {dataset} --folds K first"
        )
    split = (
        read_split(path, stems) if path.is_file() else make_split(sorted(stems), val, test, seed)
    )
    if fold is not None:
        split = fold_split(split, fold, str(path))
    for name in ("train", "val"):
        if not split[name]:
            raise SegtoolError(
                f"the {name} split is empty ({len(stems)} images in the dataset): training needs "
                f"{name} images; add images, change --val/--test, or run segtool split with "
                f"another --seed"
            )
    return split


def config_split(dataset: Path, names: list[Pair] | list[str], config: TrainConfig) -> dict:
    """`resolve_split` with a new run's options (``--split-file``, ``--val``, ``--test``,
    ``--seed``, ``--fold``)."""
    split_file = Path(config.split_file) if config.split_file else None
    return resolve_split(
        dataset,
        names,
        split_file,
        val=config.val,
        test=config.test,
        seed=config.seed,
        fold=config.fold,
    )


def split_key(key: int | tuple[int, int], seed: int) -> tuple[int, int]:
    """(index, epoch seed) from a sampler's key: an index (the dataset's own `seed`), or the
    pair `loaders.SeededSampler` sends, so workers need no reseeding between epochs."""
    return key if isinstance(key, tuple) else (key, seed)


def seed_sample(augment: Transform | None, seed: int, index: int) -> np.random.Generator:
    """Seed sample `index`'s augmentation from (epoch seed, index) alone, and return the
    random stream its crop draws from: the numbers never depend on the worker count, the
    order workers run, or the machine's cores."""
    sample_seed = int(np.random.SeedSequence([seed % 2**63, index]).generate_state(1)[0])
    if augment is not None and hasattr(augment, "set_random_seed"):
        augment.set_random_seed(sample_seed)
    return np.random.default_rng(sample_seed)


def device_seed(seed: int, index: int) -> int:
    """Sample `index`'s device augmentation seed in the epoch seeded `seed` (a stream apart
    from its crop's, `seed_sample`)."""
    return int(np.random.SeedSequence([seed % 2**63, index, 1]).generate_state(1)[0])


def _pad_to(image: np.ndarray, mask: np.ndarray, height: int, width: int, ignore: int) -> tuple:
    """Pad bottom/right to at least (height, width): image with 0, mask with the ignore value."""
    dh, dw = max(height - mask.shape[0], 0), max(width - mask.shape[1], 0)
    if dh or dw:
        image = np.pad(image, ((0, dh), (0, dw), (0, 0)))
        mask = np.pad(mask, ((0, dh), (0, dw)), constant_values=ignore)
    return image, mask


def random_crop(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    rng: np.random.Generator,
    fg_fraction: float,
    ignore_index: int,
    index: ForegroundIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` patch; with probability `fg_fraction` centred on a pixel of a
    foreground class chosen uniformly among those present (so rare classes are oversampled,
    as nnU-Net does), else anywhere. `index` is the mask's `ForegroundIndex` where the
    decoded cache keeps one (else it is made from the mask): the same patch either way."""
    from segtool.train.decoded import ForegroundIndex

    unpadded = mask
    image, mask = _pad_to(image, mask, size, size, ignore_index)
    height, width = mask.shape
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    if fg_fraction > 0 and rng.random() < fg_fraction:
        if index is None:
            index = ForegroundIndex.of(unpadded, ignore_index)
        if index.values.size:
            j = int(np.searchsorted(index.values, rng.choice(index.values)))
            y, x = index.locate(unpadded, j, int(rng.integers(index.count(j))))
            top = int(np.clip(y - size // 2, 0, height - size))
            left = int(np.clip(x - size // 2, 0, width - size))
    window = (slice(top, top + size), slice(left, left + size))
    return image[window], mask[window]


class SegmentationDataset(Dataset):
    """Image/mask pairs as tensors, with optional resize, random crops and augmentation.

    Args:
        pairs: the examples.
        class_map: ids and ignore value; mask values outside it are an error naming the file.
        size: resize every image (bilinear) and mask (nearest) into this box: ``S``,
            ``H,W`` or (H, W) (see `geometry.parse_size`).
        resize: ``stretch`` to the box, or ``keep`` the aspect ratio and pad with the ignore
            value.
        crop: train on random ``crop x crop`` patches of the full-resolution images (not with
            `size`; `TrainConfig.check` refuses both).
        fg_crop: fraction of crops centred on a foreground pixel.
        augment: an albumentations transform applied after resizing/cropping.
        normalization: ``imagenet`` or ``image``.
        regions: for ``--regions``: the dataset's class ids -> region bits (`class_map` is then
            the regions' multi-label map).
        seed: seeds crop sampling and augmentation (reseed per epoch/worker with `reseed`).
        decoded: the pairs decoded once at this geometry (`decoded.decode_pairs`), read
            instead of the files.
        on_device: draws each sample's parameters of the augmentation the training step
            applies on the device (`device_augment.DeviceAugment`), sent as ``"augment"``.
    """

    def __init__(
        self,
        pairs: list[Pair],
        class_map: ClassMap,
        *,
        size: Any = None,
        resize: str = "stretch",
        crop: int | None = None,
        fg_crop: float = 0.33,
        augment: Transform | None = None,
        normalization: str = "imagenet",
        seed: int = 0,
        regions: Regions | None = None,
        decoded: DecodedCache | None = None,
        on_device: Any = None,
    ) -> None:
        self.pairs = list(pairs)
        self.class_map = class_map
        self.box = parse_size(size)
        self.resize = resize
        self.crop = crop
        self.fg_crop = fg_crop
        self.augment = augment
        self.normalization = normalization
        self.regions = regions
        self.decoded, self.on_device = decoded, on_device
        if decoded is not None and decoded.geometry != self.geometry():
            raise ValueError(f"a decoded cache of {decoded.geometry}, not {self.geometry()}")
        self.reseed(seed)

    def geometry(self) -> Geometry:
        """What a decoded pair depends on besides its files."""
        from segtool.train.decoded import Geometry

        source = self.regions.source if self.regions is not None else self.class_map
        regions = self.regions.to_text() if self.regions is not None else None
        return Geometry(
            self.box, self.resize, source.num_classes, self.class_map.multilabel,
            self.class_map.ignore_index, regions,
        )  # fmt: skip

    def without_cache(self) -> SegmentationDataset:
        """This dataset reading the files (what the decoded cache is filled from)."""
        plain = copy.copy(self)
        plain.decoded = None
        return plain

    def fit_box(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pair brought to ``--size`` (unchanged without one)."""
        if self.box is not None:
            image, mask = resize_pair(image, mask, self.box, self.resize)
        return image, mask

    def reseed(self, seed: int) -> None:
        """Set the epoch's seed: sample `i`'s crop and augmentation draw from (seed, i) alone,
        so the numbers never depend on the worker count, the order workers run, or the
        machine's cores (a resumed run with another --workers repeats the same epoch)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image (uint8 RGB, as displayed) and mask of one pair, checked, untransformed."""
        pair = self.pairs[index]
        image = load_rgb(pair.image)
        mask = self._read_target(pair.mask)
        if mask.shape != image.shape[:2]:
            raise SegtoolError(
                f"{pair.image} is {image.shape[1]}x{image.shape[0]} but its mask {pair.mask} is "
                f"{mask.shape[1]}x{mask.shape[0]}; re-rasterize the mask"
            )
        return image, mask

    def _read_target(self, path: Path) -> np.ndarray:
        """Class ids, or bit values for a multi-label map (read as such, or made from class ids
        by `regions`), checked against the class map."""
        if self.class_map.multilabel and self.regions is None:
            return read_multilabel_values(path, self.class_map.num_classes)
        source = self.regions.source if self.regions is not None else self.class_map
        mask = read_mask(path)
        try:
            check_values(mask, source.num_classes, source.ignore_index)
        except MaskValueError as exc:
            raise SegtoolError(f"{path}: {exc}") from exc
        return mask if self.regions is None else self.regions.apply(mask)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key, self.seed)
        fg = None
        if self.decoded is not None:
            image, mask, fg = self.decoded.item(self.pairs[index].stem)
        else:
            image, mask = self.fit_box(*self.load(index))
        self.rng = seed_sample(self.augment, seed, index)
        if self.box is None and self.crop:
            ignore = self.class_map.ignore_index
            image, mask = random_crop(image, mask, self.crop, self.rng, self.fg_crop, ignore, fg)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        item = {
            "image": normalize(image, self.normalization),
            "mask": mask_tensor(mask),
            "stem": self.pairs[index].stem,
        }
        return with_device_params(item, self.on_device, seed, index)


def with_device_params(item: dict[str, Any], on_device: Any, seed: int, index: int) -> dict:
    """`item` with its device augmentation's parameters (``"augment"``), drawn from (epoch
    seed, sample) alone, where the training step augments on the device."""
    if on_device is not None:
        item["augment"] = on_device.draw(device_seed(seed, index))
    return item


def pad_collate(
    batch: list[dict[str, Any]], ignore_index: int, multiple: int = STRIDE
) -> dict[str, Any]:
    """Stack a batch, padding every item bottom/right to the largest size rounded up to a
    multiple of the model stride: images with 0, masks with the ignore value."""
    height = max(item["mask"].shape[0] for item in batch)
    width = max(item["mask"].shape[1] for item in batch)
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    channels = batch[0]["image"].shape[0]  # 3 for photos, one per sequence for volumes
    images = torch.zeros((len(batch), channels, height, width), dtype=batch[0]["image"].dtype)
    mask_type = torch.uint8 if ignore_index <= 255 else torch.int64
    if any(item["mask"].dtype != torch.uint8 for item in batch):
        mask_type = torch.int64
    masks = torch.full((len(batch), height, width), ignore_index, dtype=mask_type)
    for i, item in enumerate(batch):
        h, w = item["mask"].shape
        images[i, :, :h, :w] = item["image"]
        masks[i, :h, :w] = item["mask"]
    out = {"image": images, "mask": masks, "stem": [item["stem"] for item in batch]}
    if "augment" in batch[0]:  # the device augmentation's parameters, one row per sample
        out["augment"] = torch.stack([item["augment"] for item in batch])
    return out


def worker_init(worker_id: int) -> None:
    """Give each DataLoader worker its own, reproducible global random streams (the datasets
    draw from (epoch seed, sample) themselves, whatever the worker)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)
