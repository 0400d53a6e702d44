"""Large images in overlapping tiles, blended with a Gaussian weight."""

from __future__ import annotations

from collections.abc import Callable

import torch

from segtool.train.data import to_model_input


def gaussian_weight(size: int, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """A ``size x size`` Gaussian bump (peak 1), the blending weight of one tile."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * (size * sigma_scale) ** 2))
    w = g[:, None] * g[None, :]
    return torch.clamp(w / w.max(), min=1e-3)


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Where tiles of size `tile` start along a side of `length`, `step` apart; the last ends
    at the edge."""
    if length <= tile:
        return [0]
    starts = [*range(0, length - tile, step), length - tile]
    return sorted(set(starts))


def predict_tiled(
    img: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    tile: int,
    overlap: float,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Probabilities ``(K, H, W)`` of one image, `batch_size` tiles per `forward` call.

    Args:
        img: ``(3, H, W)`` tensor from `normalize`; padded to at least one tile.
        forward: model input batch -> probabilities ``(N, K, tile, tile)``.
        num_classes: K.
        tile: tile side (a multiple of the model stride).
        overlap: fraction of a tile shared with its neighbour.
        batch_size: tiles per forward pass.
        device: where the tiles are blended.
    """
    _, height, width = img.shape
    ph, pw = max(height, tile), max(width, tile)
    padded = torch.zeros((3, ph, pw), dtype=img.dtype)
    padded[:, :height, :width] = img
    step = max(1, int(tile * (1 - overlap)))
    weight = gaussian_weight(tile).to(device)
    acc = torch.zeros((num_classes, ph, pw), device=device)
    norm = torch.zeros((ph, pw), device=device)
    spots = [(y, x) for y in tile_starts(ph, tile, step) for x in tile_starts(pw, tile, step)]
    for i in range(0, len(spots), batch_size):
        chunk = spots[i : i + batch_size]
        batch = torch.stack([padded[:, y : y + tile, x : x + tile] for y, x in chunk])
        probs = forward(to_model_input(batch, device))
        for (y, x), p in zip(chunk, probs, strict=True):
            acc[:, y : y + tile, x : x + tile] += p * weight
            norm[y : y + tile, x : x + tile] += weight
    return (acc / norm)[:, :height, :width]
