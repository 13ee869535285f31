"""Fold the runtime's gray-to-3-channel replication into the stem convolution: a third of its work, same outputs.

The runtime feeds one gray image replicated into 3 channels, each normalised with its own mean and std
(:mod:`edgecxr.preprocess`), so channel c = a_c * channel 0 + b_c. The stem convolution of the 3 channels then
equals a 1-channel convolution of channel 0 (weights sum_c a_c W_c) plus a constant map (the b_c terms: constant
inside the image, different near the border, where the zero padding cuts them off). Exact for every input the
runtime produces; an artifact built this way reads channel 0 only, so it must not be fed anything else (the
sidecar records ``gray_stem``). Engines also skip reordering a 3-channel planar input for the stem.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from edgecxr.export.targets import TargetError


class SpaceToDepthStem(nn.Module):
    """A 1-channel 7x7 stride-2 convolution (padding 3) as a 4x4 stride-1 convolution of the image's 2x2 pixel blocks
    (4 channels; pixel_unshuffle). Same outputs: each block's tap gets the weight of the pixel it holds (zero where the
    7x7 window does not reach). Four input channels fill a VNNI group, where one channel pads to four: the oneDNN int8
    and f32 kernels then do ~3x less work for the same result."""

    def __init__(self, conv: nn.Conv2d, size: int) -> None:
        super().__init__()
        if (conv.in_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) != (
                1, (7, 7), (2, 2), (3, 3), (1, 1), 1) or size % 2:
            raise TargetError("stem_s2d needs a 7x7, stride-2, padding-3 stem and an even input size; build the target "
                             "without stem_s2d")
        w = conv.weight.detach().double()  # (O, 1, 7, 7); tap t = 2a + p - 1 of the padded image (pad 4 before)
        w4 = torch.zeros(conv.out_channels, 2, 2, 4, 4, dtype=torch.float64)  # (O, p, q, a, b)
        for a in range(4):
            for p in range(2):
                u = 2 * a + p - 1
                if not 0 <= u < 7:
                    continue
                for b in range(4):
                    for q in range(2):
                        v = 2 * b + q - 1
                        if 0 <= v < 7:
                            w4[:, p, q, a, b] = w[:, 0, u, v]
        self.conv = nn.Conv2d(4, conv.out_channels, 4, 1, 0, bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(w4.reshape(conv.out_channels, 4, 4, 4))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(F.pad(x, (4, 2, 4, 2)), 2))


class GrayStem(nn.Module):
    """``conv`` (3 input channels) for inputs whose channels are one gray image normalised by ``mean``/``std``."""

    def __init__(self, conv: nn.Conv2d, mean, std, size: int, s2d: bool = False) -> None:
        super().__init__()
        if conv.in_channels != 3 or conv.groups != 1 or conv.padding_mode != "zeros" or len(mean) != 3 or len(std) != 3:
            raise TargetError("gray_stem needs a 3-channel, ungrouped, zero-padded stem convolution and 3-channel "
                             "normalisation; build the target without gray_stem")
        w = conv.weight.detach().double()
        m, s = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        a, b = s[0] / s, (m[0] - m) / s
        self.conv = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                              bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(torch.einsum("c,ocij->oij", a, w).unsqueeze(1))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)
            wb = torch.einsum("c,ocij->oij", b, w).unsqueeze(1)
            border = F.conv2d(torch.ones(1, 1, size, size, dtype=torch.float64), wb, None, conv.stride, conv.padding,
                              conv.dilation)
        self.register_buffer("border", border.float())
        if s2d:
            self.conv = SpaceToDepthStem(self.conv, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :1]) + self.border


def fold_gray_stem(model: nn.Module, mean, std, size: int, s2d: bool = False) -> nn.Module:
    """A copy of ``model`` whose ``backbone.conv0`` reads channel 0 only (see the module docstring); ``s2d``: as a
    convolution of 2x2 pixel blocks (:class:`SpaceToDepthStem`)."""
    folded = copy.deepcopy(model)
    stem = getattr(getattr(folded, "backbone", None), "conv0", None)
    if not isinstance(stem, nn.Conv2d):
        raise TargetError(f"gray_stem: {type(model).__name__} has no backbone.conv0 convolution; build the target "
                         "without gray_stem")
    folded.backbone.conv0 = GrayStem(stem, mean, std, size, s2d=s2d)
    return folded.eval()
