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
from edgecxr.preprocess import PreprocessConfig, gaussian_smooth, preprocess, resize_policy


class RandomGamma:
    """Random gamma on a [0, 1] image: mimics the different tone curves of scanners and hospitals."""

    def __init__(self, low: float = 0.7, high: float = 1.4) -> None:
        self.low, self.high = low, high

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        g = float(torch.empty(()).uniform_(self.low, self.high))
        return t.clamp(0, 1) ** g


class RandomBorderErase:
    """Blank a band of random width (up to ``max_band`` of the side) along each edge with probability ``p``, with a
    random grey: film edges, collimation, text and laterality markers sit there and differ by hospital, so a model
    should not need them (``benchmarks/shortcut_probe.py`` measures whether it does)."""

    def __init__(self, p: float = 0.5, max_band: float = 0.15) -> None:
        self.p, self.max_band = p, max_band

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        for axis in (-2, -1):  # rows (top, bottom), then columns (left, right)
            for first in (True, False):
                if float(torch.rand(())) >= self.p:
                    continue
                n = max(1, int(float(torch.empty(()).uniform_(0.02, self.max_band)) * t.shape[axis]))
                band = slice(0, n) if first else slice(t.shape[axis] - n, None)
                t[(..., band, slice(None)) if axis == -2 else (..., band)] = float(torch.rand(()))
        return t


class InputGrain:
    """Pixel-level noise and blur at the model's input resolution, after resizing (numpy, torch's RNG).

    The photometric augmentation runs on the full-resolution image, so its noise is mostly averaged away when a
    1024-px NIH film shrinks to 224 px, while Stony Brook's 240-px images keep theirs: noise level then separates the
    sources, and models read it as COVID-19 (``benchmarks/noise_probe.py``). Here, with probability ``p_blur`` a
    Gaussian blur (sigma uniform in ``blur``, px) and then with probability ``p_noise`` white noise (sd uniform in
    ``[0, noise_sd]``) change every class's noise alike, so that the level no longer tells the source.
    The defaults span the probe's levels: sigma 0.55 px brings Stony Brook's median noise down to the others',
    sd 0.017 brings the others' up to Stony Brook's.
    """

    def __init__(self, p_noise: float = 0.5, noise_sd: float = 0.03, p_blur: float = 0.3,
                 blur: tuple[float, float] = (0.3, 1.0)) -> None:
        self.p_noise, self.noise_sd, self.p_blur, self.blur = p_noise, noise_sd, p_blur, blur

    def __call__(self, g: np.ndarray) -> np.ndarray:
        if float(torch.rand(())) < self.p_blur:
            g = gaussian_smooth(g, float(torch.empty(()).uniform_(*self.blur)))
        if float(torch.rand(())) < self.p_noise:
            sd = float(torch.empty(()).uniform_(0.0, self.noise_sd))
            g = g + sd * torch.randn(g.shape).numpy()
        return np.clip(g, 0.0, 1.0).astype(np.float32)


AUGMENTATIONS = ("light", "strong", "robust", "grain", "none")


def cxr_augmentation(strength: str = "light"):
    """Geometric and photometric augmentation; no flips (anatomy is not symmetric).

    ``light``: rotation 7 deg, scale 0.92-1.08, brightness/contrast 0.15 (the first shipped model's).
    ``strong``: rotation 10 deg, zoom 0.9-1.25 (a crop of 64-100% of the area), translation 6%,
    brightness/contrast 0.2, gamma 0.7-1.4, occasional blur and noise: aimed at the acquisition
    differences between hospitals rather than at the anatomy.
    ``robust``: ``strong`` with zoom up to 1.4, each edge's band blanked (up to 15%) with probability 0.5 and one
    random rectangle erased with probability 0.5: against borders, text and markers as shortcuts.
    ``grain``: ``strong`` here, plus :class:`InputGrain` after resizing (``input_augmentation``): against pixel noise
    as a shortcut.
    """
    from torchvision.transforms import v2

    if strength == "none":
        return None
    if strength == "light":
        return v2.Compose([
            v2.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.92, 1.08)),
            v2.ColorJitter(brightness=0.15, contrast=0.15),
        ])
    if strength in ("strong", "robust", "grain"):
        robust = strength == "robust"
        return v2.Compose([
            v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.4 if robust else 1.25)),
            *([RandomBorderErase(p=0.5, max_band=0.15)] if robust else []),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
            RandomGamma(0.7, 1.4),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.2))], p=0.2),
            v2.RandomApply([v2.GaussianNoise(sigma=0.02, clip=True)], p=0.2),
            *([v2.RandomErasing(p=0.5, scale=(0.01, 0.06), value="random")] if robust else []),
        ])
    raise ValueError(f"unknown augmentation {strength!r}; choose one of {AUGMENTATIONS}")


def input_augmentation(strength: str = "light") -> InputGrain | None:
    """The part of an augmentation strength that runs at the model's input resolution (after resizing), or None."""
    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}; choose one of {AUGMENTATIONS}")
    return InputGrain() if strength == "grain" else None


class CXRDataset(Dataset):
    """(image tensor (3, S, S), class index). Decoded images are cached in memory when ``cache``
    (about 4 bytes per pixel: turn it off for large full-resolution sets)."""

    def __init__(self, samples: list[Sample], classes: list[str], cfg: PreprocessConfig,
                 augment: bool | str = False, cache: bool = True) -> None:
        unknown = sorted({s.label for s in samples} - set(classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {classes}")
        self.samples, self.classes, self.cfg = samples, classes, cfg
        self.targets = [classes.index(s.label) for s in samples]
        strength = augment if isinstance(augment, str) else ("light" if augment else "none")
        self.augment = cxr_augmentation(strength)
        self.input_augment = input_augmentation(strength)
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
        if self.input_augment is not None:  # resized first; preprocess then leaves the size alone
            g = self.input_augment(resize_policy(np.ascontiguousarray(g, dtype=np.float32), self.cfg.size,
                                                 self.cfg.resize))
        return torch.from_numpy(preprocess(g, self.cfg)), self.targets[i]

