"""Covid-DenseNet and the plain DenseNet121 baseline.

Our own design from the abstract of "COVID-19 recognition from chest X-ray images by combining
deep learning with transfer learning" (Digital Health, 2025). The paper's full text was not
available to us, so every choice below is ours, made to match what the abstract names: a
DenseNet121 backbone (transfer learning), features at several scales, an attention mechanism
that weights them, and a multi-scale fusion head.

Choices and why:

* **Backbone** - torchvision's ``densenet121`` features, so torchvision's ImageNet weights load
  unchanged into ``backbone``.
* **Taps at three scales** - the outputs of dense blocks 2, 3 and 4 (stride 8, 16, 32;
  512, 1024 and 1024 channels; 28, 14 and 7 px at 224 input). Block 4 is taken after the
  backbone's final BatchNorm, as torchvision's classifier sees it.
* **Lateral projection** - BN-ReLU-1x1 conv to a common width (128 by default). DenseNet outputs
  are concatenations of un-normalised layer outputs, hence the BN-ReLU first. 1x1 keeps the added
  cost at about 3% of DenseNet121's FLOPs.
* **Attention per scale** - CBAM-style: a channel gate (shared MLP over average- and max-pooled
  descriptors) then a spatial gate (7x7 conv over channel mean and max). Cheap, and every op is
  a plain conv/pool/sigmoid that ONNX, OpenVINO and TensorRT all take.
* **Fusion** - FPN-style top-down path (nearest 2x upsample and add: coarse context into finer
  maps), global average pooling of each level, then a scale-attention gate: a tiny MLP over the
  three pooled vectors gives one softmax weight per scale, so the network learns how much each
  scale contributes for an image. The weighted vectors are concatenated.
* **Classifier** - dropout (0.3 by default) and one linear layer.

Input: 3-channel tensors normalised with ImageNet mean/std, 224x224 by default. A grayscale
radiograph becomes that input through :func:`edgecxr.preprocess.preprocess` (resize policy, scale
to [0, 1], replicate the gray channel three times, normalise) - the same function at training,
calibration, export verification and in the runtime.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet121

__all__ = ["CovidDenseNet", "DenseNet121Baseline", "ChannelSpatialAttention"]


class ChannelSpatialAttention(nn.Module):
    """CBAM-like attention: a channel gate followed by a spatial gate."""

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        mx = torch.amax(x, dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        desc = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(desc))


class _Lateral(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False))


class CovidDenseNet(nn.Module):
    """DenseNet121 backbone + per-scale attention + multi-scale fusion head."""

    arch = "covid-densenet"
    tap_channels = (512, 1024, 1024)

    def __init__(self, num_classes: int = 3, width: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.backbone = densenet121(weights=None).features
        self.lateral = nn.ModuleList(_Lateral(c, width) for c in self.tap_channels)
        self.attention = nn.ModuleList(ChannelSpatialAttention(width) for _ in self.tap_channels)
        n = len(self.tap_channels)
        self.scale_gate = nn.Sequential(nn.Linear(n * width, 64), nn.ReLU(inplace=True), nn.Linear(64, n))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(n * width, num_classes))
        self.num_classes = num_classes

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.backbone
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        x = f.transition1(f.denseblock1(x))
        c2 = f.denseblock2(x)
        c3 = f.denseblock3(f.transition2(c2))
        c4 = f.norm5(f.denseblock4(f.transition3(c3)))
        return [c2, c3, c4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fused, scale-weighted vector the classifier reads (N, scales * width)."""
        return self._fuse(self._taps(x))

    def features_and_backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused head vector, ReLU'd block-4 backbone map (N, 1024, 7, 7)) from one pass: the guard's inputs."""
        taps = self._taps(x)
        return self._fuse(taps), F.relu(taps[-1])

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(fused vector, pooled backbone features, per-scale maps each times its scale weight) from one pass.

        The classifier is linear in the maps: logit_c - bias_c equals the spatial mean of
        ``sum_s upsample(W[c, s] . maps[s])``, so that sum is the class-activation map (CAM) of class c."""
        taps = self._taps(x)
        fused, maps = self._fuse(taps, return_maps=True)
        return fused, F.relu(taps[-1]), maps

    def _fuse(self, taps: list[torch.Tensor], return_maps: bool = False):
        feats = [att(lat(t)) for t, lat, att in zip(taps, self.lateral, self.attention)]
        # top-down: coarse context added into finer maps
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(feats[i + 1], size=feats[i].shape[-2:], mode="nearest")
            feats[i] = feats[i] + up
        pooled = [torch.flatten(F.adaptive_avg_pool2d(p, 1), 1) for p in feats]
        stacked = torch.stack(pooled, dim=1)  # (N, scales, width)
        weights = torch.softmax(self.scale_gate(torch.flatten(stacked, 1)), dim=1)
        fused = torch.flatten(stacked * weights.unsqueeze(-1), 1)
        if return_maps:
            return fused, [f * weights[:, i].view(-1, 1, 1, 1) for i, f in enumerate(feats)]
        return fused


class DenseNet121Baseline(nn.Module):
    """Plain DenseNet121 (torchvision layout) with a new classifier: the paper's baseline."""

    arch = "densenet121"

    def __init__(self, num_classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = densenet121(weights=None).features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1024, num_classes))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (N, 1024)."""
        x = F.relu(self.backbone(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def features_and_backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features, the ReLU'd last feature map)."""
        m = F.relu(self.backbone(x))
        return torch.flatten(F.adaptive_avg_pool2d(m, 1), 1), m

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(pooled features, the ReLU'd last feature map, [that map]): CAM_c = W[c] . maps."""
        f, m = self.features_and_backbone(x)
        return f, m, [m]
