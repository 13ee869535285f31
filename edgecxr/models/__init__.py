"""Model builders in torchvision's style: ``covid_densenet(num_classes=3, weights=None)``.

``weights`` is ``None`` (random init), ``"imagenet"`` (torchvision's DenseNet121 ImageNet weights
for the backbone), or a path: a torchvision densenet121 state dict (backbone only) or a full
edgecxr checkpoint (``.safetensors`` with its metadata, or a training ``.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from edgecxr.errors import WeightsError
from edgecxr.models.covid_densenet import CovidDenseNet, DenseNet121Baseline

Weights = str | Path | None


def _apply_weights(model: nn.Module, weights: Weights, arch: str) -> nn.Module:
    if weights is None:
        return model
    if isinstance(weights, str) and weights.lower() == "imagenet":
        from edgecxr.models.weights import load_imagenet_backbone

        load_imagenet_backbone(model)
        return model
    from edgecxr.models.weights import load_weights_file

    load_weights_file(model, Path(weights), arch)
    return model


def covid_densenet(num_classes: int = 3, weights: Weights = None, **kwargs) -> CovidDenseNet:
    """Covid-DenseNet: DenseNet121 + per-scale attention + multi-scale fusion head."""
    return _apply_weights(CovidDenseNet(num_classes=num_classes, **kwargs), weights, CovidDenseNet.arch)


def densenet121_baseline(num_classes: int = 3, weights: Weights = None, **kwargs) -> DenseNet121Baseline:
    """Plain DenseNet121 with a ``num_classes`` classifier (the baseline)."""
    return _apply_weights(DenseNet121Baseline(num_classes=num_classes, **kwargs), weights, DenseNet121Baseline.arch)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "covid-densenet": covid_densenet,
    "densenet121": densenet121_baseline,
}


def build_model(arch: str, num_classes: int = 3, weights: Weights = None, **kwargs) -> nn.Module:
    """Build a model by name (see ``BUILDERS``)."""
    try:
        builder = BUILDERS[arch]
    except KeyError:
        raise WeightsError(f"unknown model '{arch}'; choose one of: {', '.join(BUILDERS)}") from None
    return builder(num_classes=num_classes, weights=weights, **kwargs)


def count_flops(model: nn.Module, size: int = 224) -> int:
    """FLOPs of one forward pass at batch 1 (a multiply-add counts as 2), via torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(arch: str, size: int = 224) -> dict:
    """Parameters and FLOPs of ``arch`` at ``size``, and its FLOPs relative to DenseNet121."""
    m = build_model(arch)
    flops = count_flops(m, size)
    base = count_flops(build_model("densenet121"), size) if arch != "densenet121" else flops
    return {"name": arch, "params": count_params(m), "input_size": size, "gflops": flops / 1e9,
            "flops_vs_densenet121": flops / base}


__all__ = ["summary", "covid_densenet", "densenet121_baseline", "build_model", "BUILDERS", "count_flops", "count_params",
           "CovidDenseNet", "DenseNet121Baseline"]
