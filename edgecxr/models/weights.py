"""Loading weights into the models: ImageNet backbone, torchvision state dicts, edgecxr checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from edgecxr.errors import WeightsError

# Old torchvision DenseNet checkpoints name "norm.1" where the modules are now "norm1".
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _normalise_torchvision_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        m = _OLD_KEY.match(key)
        if m:
            key = m.group(1) + m.group(2)
        out[key] = value
    return out


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a torchvision ``densenet121`` state dict (``features.*`` keys) into ``model.backbone``."""
    state = _normalise_torchvision_keys(state)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise WeightsError(
            f"{source}: no 'features.*' keys - this is not a torchvision densenet121 state dict. "
            "Pass a torchvision densenet121 state dict or an edgecxr checkpoint (.safetensors)."
        )
    try:
        model.backbone.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: does not fit DenseNet121's backbone ({str(exc).splitlines()[0]})") from exc


def load_imagenet_backbone(model: nn.Module) -> None:
    """torchvision's DenseNet121 ImageNet weights (downloaded to torch's cache when online)."""
    from torchvision.models import DenseNet121_Weights

    try:
        state = DenseNet121_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash mismatch ...
        raise WeightsError(
            "could not fetch torchvision's DenseNet121 ImageNet weights "
            f"({type(exc).__name__}: {exc}). Offline? Download densenet121-a639ec97.pth elsewhere "
            "and pass its path as weights=PATH (CLI: --weights PATH)."
        ) from exc
    load_backbone_state(model, state, "torchvision DenseNet121_Weights.IMAGENET1K_V1")


def read_state_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a .safetensors or torch file; return (state dict, edgecxr metadata or None)."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such file. Pass an existing weights file, 'imagenet' or None.")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: file is empty.")
    if path.suffix == ".safetensors":
        from edgecxr.checkpoint import load_checkpoint

        state, meta = load_checkpoint(path)
        return state, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a readable torch state dict ({type(exc).__name__}). The file may be corrupt or "
            "truncated; re-download or re-export it."
        ) from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return obj["model"], obj.get("meta")
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict.")


def load_weights_file(model: nn.Module, path: Path, arch: str) -> dict | None:
    """Load a full edgecxr model state or a torchvision backbone state; return metadata if any."""
    state, meta = read_state_file(path)
    if meta is not None and meta.get("arch") not in (None, arch):
        raise WeightsError(f"{path}: checkpoint is for '{meta.get('arch')}', not '{arch}'.")
    if any(k.startswith("backbone.") for k in state):
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{path}: does not fit {arch} ({str(exc).splitlines()[0]})") from exc
        return meta
    load_backbone_state(model, state, str(path))
    return meta
