"""The training dataset of a volume folder: 2-D slices from the slice cache.

Returns the same items as `SegmentationDataset` (``{"image": float tensor (C, H, W), "mask":
tensor (H, W) as `data.mask_tensor` carries it, "stem": case name}``), so losses, the collate function, the training step
and validation are shared with photos. The ``stem`` is the case, so validation can add up
counts per case: a volume's Dice is computed from all of its voxels, not averaged over slices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segtool.core.classes import ClassMap
from segtool.core.regions import Regions
from segtool.train.data import (
    mask_tensor,
    random_crop,
    seed_sample,
    split_key,
    with_device_params,
)
from segtool.train.transforms import Transform
from segtool.train.volumes import CachedVolume


class VolumeSliceDataset(Dataset):
    """Every slice of every cached volume, with optional crops, foreground oversampling and
    augmentation.

    Args:
        volumes: cached volumes (standardised images, labels).
        class_map: ids and ignore value.
        crop: train on random ``crop x crop`` patches of the slices.
        fg_crop: probability that a sample is replaced by a slice of the same volume holding
            foreground (most slices of a brain hold no tumour), its crop centred on a
            foreground voxel.
        augment: an albumentations transform (geometric; the images are standardised floats).
        seed: seeds the sampling (the epoch's seed comes with each index, or from `reseed`).
        regions: for ``--regions``: label ids -> region bits (`class_map` is the regions').
        on_device: draws the parameters of the augmentation the training step applies on
            the device (`device_augment.DeviceAugment`, geometric), sent as ``"augment"``.
    """

    def __init__(
        self,
        volumes: list[CachedVolume],
        class_map: ClassMap,
        *,
        crop: int | None = None,
        fg_crop: float = 0.0,
        augment: Transform | None = None,
        seed: int = 0,
        regions: Regions | None = None,
        on_device: Any = None,
    ) -> None:
        self.volumes = list(volumes)
        self.on_device = on_device
        self.regions = regions
        self.class_map = class_map
        self.crop = crop
        self.fg_crop = fg_crop
        self.augment = augment
        self.index = [(v, s) for v, vol in enumerate(self.volumes) for s in range(len(vol.label))]
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Set the epoch's seed: slice `i`'s choice, crop and augmentation draw from (seed, i)
        alone (`data.seed_sample`), whatever the worker count."""
        self.seed = seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key, self.seed)
        self.rng = seed_sample(self.augment, seed, index)
        v, s = self.index[index]
        volume = self.volumes[v]
        foreground = False
        if self.fg_crop > 0 and volume.fg_slices and self.rng.random() < self.fg_crop:
            s = int(self.rng.choice(volume.fg_slices))
            foreground = True
        image = np.asarray(volume.image[s], dtype=np.float32).transpose(1, 2, 0)  # (H, W, C)
        mask = np.asarray(volume.label[s])
        if self.regions is not None:
            mask = self.regions.apply(mask)
        if self.crop:
            image, mask = random_crop(
                image,
                mask,
                self.crop,
                self.rng,
                1.0 if foreground else 0.0,
                self.class_map.ignore_index,
            )
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": mask_tensor(mask),
            "stem": volume.case,
        }
        return with_device_params(item, self.on_device, seed, index)
