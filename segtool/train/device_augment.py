"""Augmentation of whole batches on the device (``--augment-on device``), with torch ops.

The loader then only reads (from the decoded cache) and collates: on a GPU the flips, the
affine warp, brightness/contrast and noise cost the GPU a few percent of a step, where
albumentations costs a loader worker more than the rest of its work together.

Each sample's parameters are drawn on the CPU, in the loader, from a ``torch.Generator``
seeded by (seed, epoch, sample) alone (`DeviceAugment.draw`), and travel with the batch
(pinned with it on a GPU): the same numbers whatever the worker count or the device. The
training step applies them (`DeviceAugment.__call__`) after `data.to_model_input`:

- flips by `torch.flip` (exact);
- rotation, scale and translation by one ``affine_grid`` and ``grid_sample``: bilinear for
  images, nearest for masks, what moves in from outside is 0 in the image (the mean colour
  after normalisation) and the ignore value in the mask, so no loss or score counts it; a
  sample drawn without a warp keeps its pixels exactly;
- contrast about each sample's channel means and brightness, in units of the 0..1 intensity
  range (ImageNet's channel spread after normalisation), and Gaussian noise from the device's
  generator seeded per sample (the noise pattern is the device's; its strength is the draw).

Validation never augments: only the training dataset draws parameters. The same code runs
on the CPU (CI's tests); the strong preset's elastic and hue/saturation transforms are
albumentations' alone (``--augment-on cpu``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segtool.core.errors import SegtoolError, check_choice
from segtool.train.data import IMAGENET_STD
from segtool.train.transforms import Transform, build_augmentation

#: Where augmentation runs: albumentations per sample in the loader, or batches on the device.
AUGMENT_ON = ("cpu", "device")

#: The columns of a sample's parameters.
(HFLIP, VFLIP, WARP, ANGLE, SCALE, SHIFT_X, SHIFT_Y, TONE, CONTRAST, BRIGHT, NOISE, SIGMA,
 SEED_HIGH, SEED_LOW) = range(14)  # fmt: skip
N_PARAMS = 14


@dataclass(frozen=True)
class DevicePreset:
    """Probabilities and ranges of one preset (albumentations' light and strong values)."""

    hflip: float
    vflip: float
    warp: float  #: probability of the affine warp
    rotate: float  #: degrees, either way
    scale: tuple[float, float]
    shift: float  #: share of the side, either way
    tone: float  #: probability of brightness/contrast
    contrast: float
    brightness: float
    noise: float
    sigma: tuple[float, float]  #: noise standard deviation, share of the intensity range


DEVICE_PRESETS = {
    "light": DevicePreset(0.5, 0.0, 0.5, 15, (0.9, 1.1), 0.0625, 0.5, 0.2, 0.2, 0.0, (0, 0)),
    "strong": DevicePreset(0.5, 0.5, 0.7, 30, (0.75, 1.25), 0.1, 0.7, 0.3, 0.3, 0.3, (0.02, 0.08)),
}


class DeviceAugment:
    """A preset's parameters drawn per sample, and applied to batches on their device.

    Args:
        preset: ``light`` or ``strong``.
        ignore_index: the mask value of what moves in from outside.
        intensity: False keeps the geometric part (standardised volume slices).
    """

    def __init__(self, preset: str, ignore_index: int, *, intensity: bool = True) -> None:
        check_choice("augment", preset, DEVICE_PRESETS)
        self.preset, self.p = preset, DEVICE_PRESETS[preset]
        self.ignore_index, self.intensity = ignore_index, intensity
        self._units: dict[torch.device, torch.Tensor] = {}

    def draw(self, seed: int) -> torch.Tensor:
        """One sample's parameters (float32, `N_PARAMS`: every device takes them) from its
        `seed` alone; a transform not drawn gets its identity values."""
        p = self.p
        u = torch.rand(12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        out = torch.zeros(N_PARAMS, dtype=torch.float32)
        out[HFLIP], out[VFLIP] = float(u[0] < p.hflip), float(u[1] < p.vflip)
        out[SCALE] = out[CONTRAST] = 1.0
        if u[2] < p.warp:
            out[WARP] = 1.0
            out[ANGLE] = (2 * u[3] - 1) * p.rotate
            out[SCALE] = p.scale[0] + u[4] * (p.scale[1] - p.scale[0])
            out[SHIFT_X], out[SHIFT_Y] = (2 * u[5] - 1) * p.shift, (2 * u[6] - 1) * p.shift
        if self.intensity and u[7] < p.tone:
            out[TONE] = 1.0
            out[CONTRAST] = 1 + (2 * u[8] - 1) * p.contrast
            out[BRIGHT] = (2 * u[9] - 1) * p.brightness
        if self.intensity and u[10] < p.noise:
            out[NOISE] = 1.0
            out[SIGMA] = p.sigma[0] + u[11] * (p.sigma[1] - p.sigma[0])
        out[SEED_HIGH], out[SEED_LOW] = divmod(seed % 2**31, 2**16)  # exact in float32
        return out

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch: `images` (B, C, H, W) float and `masks` (B, H, W) int64 on the
        device, `params` (B, `N_PARAMS`) as collated (on the host: which transforms run is
        read there, without waiting for the device)."""
        dev = params.to(images.device, non_blocking=True)  # pinned with the batch on a GPU

        def chosen(column: int) -> torch.Tensor:
            return dev[:, column].bool().view(-1, 1, 1, 1)

        if params[:, HFLIP].any():
            images = torch.where(chosen(HFLIP), images.flip(-1), images)
            masks = torch.where(chosen(HFLIP)[:, 0], masks.flip(-1), masks)
        if params[:, VFLIP].any():
            images = torch.where(chosen(VFLIP), images.flip(-2), images)
            masks = torch.where(chosen(VFLIP)[:, 0], masks.flip(-2), masks)
        if params[:, WARP].any():
            images, masks = self._warp(images, masks, dev, chosen(WARP))
        if params[:, TONE].any():
            unit = self._unit(images)
            mean = images.mean(dim=(2, 3), keepdim=True)
            toned = (images - mean) * dev[:, CONTRAST].view(-1, 1, 1, 1) + mean
            toned = toned + dev[:, BRIGHT].view(-1, 1, 1, 1) * unit
            images = torch.where(chosen(TONE), toned, images)
        if params[:, NOISE].any():
            images = self._noise(images, params)
        return images, masks

    def _warp(
        self, images: torch.Tensor, masks: torch.Tensor, dev: torch.Tensor, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate, scale and shift about the centre (pixel geometry, whatever the aspect)."""
        height, width = images.shape[-2:]
        angle = dev[:, ANGLE] * (math.pi / 180)
        scale = dev[:, SCALE]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        tx, ty = dev[:, SHIFT_X], dev[:, SHIFT_Y]
        aspect = height / width
        theta = torch.stack(
            [
                torch.stack([cos, sin * aspect, -2 * (cos * tx + sin * ty * aspect)], dim=1),
                torch.stack([-sin / aspect, cos, -2 * (-sin * tx / aspect + cos * ty)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False)
        shifted = (masks + 1).unsqueeze(1).float()  # 0 is what moved in from outside
        moved = F.grid_sample(shifted, grid, "nearest", "zeros", align_corners=False)
        moved = moved.squeeze(1).long() - 1
        moved = torch.where(moved < 0, self.ignore_index, moved)
        return torch.where(chosen, warped, images), torch.where(chosen[:, 0], moved, masks)

    def _unit(self, images: torch.Tensor) -> torch.Tensor:
        """The 0..1 intensity range in model-input units, per channel, made on each device
        once from numbers (no copy from the host)."""
        unit = self._units.get(images.device)
        if unit is None or unit.shape[1] != images.shape[1]:
            channels = images.shape[1]
            unit = torch.empty(channels, device=images.device)
            for c in range(channels):
                unit[c] = 1.0 / float(IMAGENET_STD[c % 3])
            unit = self._units[images.device] = unit.view(1, -1, 1, 1)
        return unit

    def _noise(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Gaussian noise on the samples drawn for it, each from a device generator seeded by
        its parameters."""
        images = images.clone()
        unit = self._unit(images)
        for i in torch.nonzero(params[:, NOISE]).flatten().tolist():
            generator = torch.Generator(device=images.device)
            generator.manual_seed(int(params[i, SEED_HIGH]) * 2**16 + int(params[i, SEED_LOW]))
            noise = torch.randn(
                images.shape[1:], generator=generator, device=images.device, dtype=images.dtype
            )
            images[i] += noise * unit[0] * float(params[i, SIGMA])
        return images


def augmentations(
    preset: str, on: str, ignore_index: int, seed: int, *, geometric_only: bool = False
) -> tuple[Transform | None, DeviceAugment | None]:
    """The training augmentation, where ``--augment-on`` runs it: (albumentations' transform
    for the loader, None) or (None, a `DeviceAugment` for the training step).

    Raises:
        SegtoolError: an unknown place or preset.
    """
    check_choice("augment-on", on, AUGMENT_ON)
    if on == "cpu" or preset == "none":
        return build_augmentation(preset, ignore_index, seed, geometric_only=geometric_only), None
    if preset not in DEVICE_PRESETS:
        raise SegtoolError(f"--augment {preset} has no device version; use --augment-on cpu")
    return None, DeviceAugment(preset, ignore_index, intensity=not geometric_only)
