"""Torch ``Dataset`` over :class:`Sample` lists, with CXR-suited augmentation.

Augmentation runs on the decoded grayscale image *before* the one preprocessing function, so the
tensors a model sees at training differ from the runtime's only by the augmentation itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecxr.data.layouts import Sample
from edgecxr.imaging import read_image
from edgecxr.preprocess import PreprocessConfig, preprocess


def cxr_augmentation():
    """Small rotation/scale/translation and brightness/contrast; no flips (anatomy is not symmetric)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.92, 1.08)),
        v2.ColorJitter(brightness=0.15, contrast=0.15),
    ])


class CXRDataset(Dataset):
    """(image tensor (3, S, S), class index). Decoded images are cached in memory when ``cache``
    (about 4 bytes per pixel: turn it off for large full-resolution sets)."""

    def __init__(self, samples: list[Sample], classes: list[str], cfg: PreprocessConfig,
                 augment: bool = False, cache: bool = True) -> None:
        unknown = sorted({s.label for s in samples} - set(classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {classes}")
        self.samples, self.classes, self.cfg = samples, classes, cfg
        self.targets = [classes.index(s.label) for s in samples]
        self.augment = cxr_augmentation() if augment else None
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def gray(self, i: int) -> np.ndarray:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        g = read_image(self.samples[i].path)
        if self._cache is not None:
            self._cache[i] = g
        return g

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = self.gray(i)
        if self.augment is not None:
            t = self.augment(torch.from_numpy(g).unsqueeze(0)).clamp_(0, 1)
            g = t.squeeze(0).numpy()
        return torch.from_numpy(preprocess(g, self.cfg)), self.targets[i]

