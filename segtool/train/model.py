"""Building, saving and loading the segmentation model (segmentation-models-pytorch)."""

from __future__ import annotations

import contextlib
import difflib
import io
from pathlib import Path

import torch
from torch import nn

from segtool.core.classes import mode_for, out_channels
from segtool.core.constants import BINARY
from segtool.core.errors import SegtoolError
from segtool.core.files import give_user_mode, output_folder, read_json
from segtool.train.geometry import STRIDE

__all__ = ["STRIDE"]


def architectures() -> list[str]:
    """Architecture names segmentation-models-pytorch can build (lower case)."""
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def encoders() -> list[str]:
    """Encoder names segmentation-models-pytorch knows."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def _unknown(kind: str, name: str, valid: list[str]) -> SegtoolError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(valid) if len(valid) <= 12 else ", ".join(valid[:12]) + ", ..."
    return SegtoolError(f"{kind} {name!r} is unknown; {hint}valid: {shown}")


def check_names(arch: str, encoder: str) -> None:
    """Raise a clear error for an unknown architecture or encoder (listing the valid ones)."""
    if arch.lower() not in architectures():
        raise _unknown("--arch", arch, architectures())
    if encoder.startswith("tu-"):  # any timm model, through segmentation-models-pytorch
        import timm

        if not timm.list_models(encoder.removeprefix("tu-")):
            raise _unknown("--encoder", encoder, ["tu-" + m for m in timm.list_models("*resnet*")])
    elif encoder not in encoders():
        raise _unknown("--encoder", encoder, encoders())


def build_model(
    arch: str,
    encoder: str,
    weights: str | None,
    num_classes: int,
    multilabel: bool = False,
    in_channels: int = 3,
    **kwargs: object,
) -> nn.Module:
    """A segmentation model for K classes (one output channel when K = 2, K-1 sigmoid channels
    for a multi-label map).

    Args:
        arch: architecture name (``unet``, ``fpn``, ``deeplabv3plus``, ...).
        encoder: encoder name (``resnet34``, ``efficientnet-b0``, ...).
        weights: None (random init, nothing downloaded), ``imagenet`` (downloads, needs
            internet), or a path to a local state dict (``.pt``/``.pth``/``.safetensors``) for
            the encoder.
        num_classes: K, background included.
        multilabel: one output channel per foreground class (no background channel).
        in_channels: input channels: 3 for photos, one per MRI sequence for volumes.
        **kwargs: passed to ``segmentation_models_pytorch.create_model`` when not None.

    Raises:
        SegtoolError: unknown names, or a weights file that is missing or does not fit.
    """
    import segmentation_models_pytorch as smp

    check_names(arch, encoder)
    local = weights not in (None, "none", "imagenet")
    extra = {k: v for k, v in kwargs.items() if v is not None}
    download = weights not in (None, "none") and not local
    try:
        with _quiet_downloads() if download else contextlib.nullcontext():
            model = smp.create_model(
                arch,
                encoder_name=encoder,
                encoder_weights=None if local or weights == "none" else weights,
                in_channels=in_channels,
                classes=out_channels(num_classes, multilabel),
                **extra,
            )
    except (ValueError, KeyError, TypeError) as exc:
        if download and not isinstance(exc, (KeyError, TypeError)) and _is_download_error(exc):
            raise _download_error(encoder, weights, exc) from exc
        raise SegtoolError(f"cannot build {arch} with {encoder}: {exc}") from exc
    except Exception as exc:
        if download:
            raise _download_error(encoder, weights, exc) from exc
        raise
    if local:
        load_encoder_weights(model, Path(str(weights)))
    return model


@contextlib.contextmanager
def _quiet_downloads():
    """Silence the download libraries' retry logs (a hundred lines without a network)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "urllib3", "httpx", "timm")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _is_download_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("connect", "network", "hub", "download", "internet"))


def _download_error(encoder: str, weights: str | None, exc: BaseException) -> SegtoolError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SegtoolError(
        f"--encoder-weights {weights}: cannot download the {weights} weights of {encoder} "
        f"({type(exc).__name__}: {first[:160]}); without a network, download them elsewhere and "
        f"pass the local file: --encoder-weights /path/to/{encoder}.pth"
    )


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into the model's encoder (a whole-model dict is accepted too).

    Raises:
        SegtoolError: the file is missing, unreadable, or its tensors do not fit the encoder.
    """
    if not path.is_file():
        raise SegtoolError(f"--encoder-weights {path}: no such file; pass none, imagenet or a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SegtoolError(f"{path}: not a readable state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    encoder = model.encoder  # type: ignore[attr-defined]
    if not set(state) & set(encoder.state_dict()):
        raise SegtoolError(f"{path}: none of its tensors fit the {type(encoder).__name__} encoder")
    try:
        encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors with the right names but the wrong shapes
        raise SegtoolError(
            f"{path}: does not fit the {type(encoder).__name__} encoder ({exc})"
        ) from exc


#: segmentation-models-pytorch's description of a saved model (architecture, classes), inside
#: the model folder; not the run's config.json, which `runfolder.RunFolder` reads.
MODEL_CONFIG = "config.json"


def has_model(folder: Path, *, weights: bool = False) -> bool:
    """Whether `folder` holds a saved model (its config; with `weights`, a safetensors file)."""
    if not (folder / MODEL_CONFIG).is_file():
        return False
    return not weights or any(folder.glob("*.safetensors"))


def model_classes(folder: Path) -> int | None:
    """The number of output channels a saved model declares (None when it does not say)."""
    try:
        doc = read_json(folder / MODEL_CONFIG, "model config.json", "re-save the model")
        return int(doc["classes"])
    except (SegtoolError, ValueError, KeyError, TypeError):
        return None


def save_model(model: nn.Module, folder: Path) -> None:
    """Save in segmentation-models-pytorch's own format (config.json + model.safetensors),
    atomically: written beside `folder`, then renamed onto it."""
    with output_folder(folder, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))  # type: ignore[attr-defined]
        give_user_mode(tmp)  # safetensors writes model.safetensors 0600


def load_model(folder: Path) -> nn.Module:
    """Load a model saved with `save_model` (or any smp ``save_pretrained`` folder).

    Raises:
        SegtoolError: the folder has no model.
    """
    import segmentation_models_pytorch as smp

    if not has_model(folder):
        raise SegtoolError(
            f"{folder}: no model here (config.json missing); pass a run folder's model/"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smp prints where it loads from
            return smp.from_pretrained(str(folder))
    except Exception as exc:
        raise SegtoolError(f"{folder}: cannot load the model ({exc})") from exc


def labels_from_logits(
    logits: torch.Tensor, num_classes: int, threshold: float = 0.5
) -> torch.Tensor:
    """Class ids ``(N, H, W)`` from logits: sigmoid > threshold for binary models (one channel),
    argmax over channels otherwise."""
    if mode_for(num_classes) == BINARY:
        return (torch.sigmoid(logits[:, 0]) > threshold).long()
    return logits.argmax(dim=1)


def bits_from_logits(logits: torch.Tensor, thresholds: torch.Tensor | float = 0.5) -> torch.Tensor:
    """Multi-label bit values ``(N, H, W)`` from ``(N, C, H, W)`` logits: bit c is set where the
    sigmoid of channel c exceeds its threshold (one per channel, or one for all)."""
    if not isinstance(thresholds, float | int):  # one number stays one: no copy to the device
        thresholds = torch.as_tensor(thresholds, dtype=logits.dtype, device=logits.device)
        thresholds = thresholds.reshape(-1, 1, 1)
    on = torch.sigmoid(logits) > thresholds
    bits = torch.arange(logits.shape[1], device=logits.device)
    return (on.long() << bits[:, None, None]).sum(dim=1)
