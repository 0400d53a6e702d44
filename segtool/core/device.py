"""Which device to compute on, and in which precision."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from segtool.core.constants import DEVICES
from segtool.core.errors import SegtoolError, check_choice


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; asking for a missing device is an error.

    Raises:
        SegtoolError: an unknown device name, or a device this machine does not have.
    """
    check_choice("device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SegtoolError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise SegtoolError("--device mps: MPS is not available; use --device cpu or auto")
    return torch.device(name)


def amp_dtype_for(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """bf16 autocast on CUDA where supported (fp16 otherwise); none on CPU unless asked."""
    if amp is False or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision in `dtype` on `device`, or a no-op context when `dtype` is None (any
    device, the meta device of the sync audit included)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
