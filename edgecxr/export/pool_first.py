"""Pool before the transition convolutions: a quarter of their work, same function.

A DenseNet transition is BatchNorm-ReLU-Conv1x1-AvgPool2x2. The 1x1 convolution (no bias) and the 2x2 average pool
are both linear and act on different axes (channels vs space), so they commute: pooling first gives the same output
(up to float rounding) while the convolution runs on a quarter of the pixels. In DenseNet121 the three transitions
hold ~10% of the network's multiply-adds. The layers keep their names (``transitionN.conv``), so target files that
name them stay valid; the export gate still compares against the unchanged model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from torch import nn

from edgecxr.export.targets import TargetError


def _is_transition(m: nn.Module) -> bool:
    names = [n for n, _ in m.named_children()]
    if names != ["norm", "relu", "conv", "pool"]:
        return False
    conv, pool = m.conv, m.pool
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1 and conv.bias is None
            and isinstance(pool, nn.AvgPool2d) and pool.padding == 0 and not pool.ceil_mode)


def pool_first(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``backbone.transitionN`` blocks pool before their 1x1 convolution."""
    out = copy.deepcopy(model)
    features = getattr(out, "backbone", None)
    swapped = 0
    for name, child in list(features.named_children()) if features is not None else []:
        if name.startswith("transition") and _is_transition(child):
            setattr(features, name, nn.Sequential(OrderedDict(
                [("norm", child.norm), ("relu", child.relu), ("pool", child.pool), ("conv", child.conv)])))
            swapped += 1
    if not swapped:
        raise TargetError(f"pool_first: {type(model).__name__} has no DenseNet transition (BN-ReLU-1x1 conv-avgpool) "
                          "under backbone; build the target without pool_first")
    return out.eval()
