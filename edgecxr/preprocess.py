"""The one preprocessing function, used by training, calibration, export verification and the runtime.

Policy (parameters in :class:`PreprocessConfig`, written into every checkpoint and artifact):

1. input: a 2-D float32 grayscale array scaled to [0, 1] (see :mod:`edgecxr.imaging`);
2. resize: ``"crop"`` (default) scales the shorter side to ``size`` and centre-crops the longer one,
   so the lungs fill the frame and no padding border is added (a border whose width depends on the
   source's aspect ratio would be one more shortcut to the hospital); ``"pad"`` keeps the whole
   image, scaling the longer side to ``size`` and padding with black; ``"stretch"`` resizes to
   ``size`` x ``size``. Resampling is Pillow's bilinear on float32 data;
3. optionally (``smooth`` > 0), a Gaussian low-pass of the resized image (sigma in pixels, edges replicated):
   sources reach this size by different resizing paths that leave different pixel-level noise, which a model
   can learn as a class (``benchmarks/noise_probe.py``); smoothing every image alike removes most of it;
4. optionally (``equalize``), global histogram equalisation of the resized image (256 bins on [0, 1]):
   spreads each image's grey levels over the whole range, one more way to make hospitals' exposure
   and processing differences smaller;
5. replicate the gray channel to 3 channels (the backbone was designed for RGB);
6. normalise with ImageNet mean and std, as torchvision's pretrained DenseNet121 expects.

Output: float32 array (3, size, size). Torch-free: numpy and Pillow only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 224
    resize: str = "crop"
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    equalize: bool = False
    smooth: float = 0.0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, not {self.resize!r}")
        if not 16 <= self.size <= 2048:
            raise ValueError(f"size must be in [16, 2048], not {self.size}")
        if not 0.0 <= self.smooth <= 4.0:
            raise ValueError(f"smooth (Gaussian sigma in pixels) must be in [0, 4], not {self.smooth}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not self.smooth:
            del d["smooth"]  # off: the dict stays what checkpoints and artifacts written before the option hold
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(size=int(d["size"]), resize=str(d["resize"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   equalize=bool(d.get("equalize", False)),  # absent in checkpoints written before the option
                   smooth=float(d.get("smooth", 0.0)))


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape == (h, w):
        return img
    return np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)


def resize_policy(gray: np.ndarray, size: int, policy: str) -> np.ndarray:
    """Resize a 2-D float32 image to (size, size) with the given policy."""
    h, w = gray.shape
    if policy == "stretch":
        return _resize(gray, size, size)
    if policy == "crop":
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        r = _resize(gray, nw, nh)
        top, left = (nh - size) // 2, (nw - size) // 2
        return r[top : top + size, left : left + size]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = _resize(gray, nw, nh)
    return out


def gaussian_smooth(g: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian low-pass of a 2-D float32 image (kernel radius ceil(3 sigma), edges replicated).

    numpy only: the runtime's dependencies offer no filter for float images (Pillow's GaussianBlur takes 8-bit
    modes, and rounding to 8 bits would change the very noise this removes)."""
    if sigma <= 0:
        return g
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    h, w = g.shape
    p = np.pad(g, ((0, 0), (r, r)), mode="edge")
    g = sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))
    p = np.pad(g, ((r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[i:i + h] for i in range(2 * r + 1)).astype(np.float32)


def equalize_hist(g: np.ndarray, bins: int = 256) -> np.ndarray:
    """Global histogram equalisation of a [0, 1] image: each value becomes the share of pixels at or below it."""
    hist, edges = np.histogram(g, bins=bins, range=(0.0, 1.0))
    cdf = np.cumsum(hist, dtype=np.float64) / max(1, g.size)
    return np.interp(g, edges[1:], cdf).astype(np.float32)


def preprocess(gray: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """2-D float32 grayscale in [0, 1] -> float32 (3, size, size), normalised."""
    if gray.ndim != 2:
        raise ValueError(f"preprocess expects a 2-D grayscale array, got shape {gray.shape}")
    g = resize_policy(np.ascontiguousarray(gray, dtype=np.float32), cfg.size, cfg.resize)
    if cfg.smooth:
        g = gaussian_smooth(g, cfg.smooth)
    if cfg.equalize:
        g = equalize_hist(g)
    mean = np.asarray(cfg.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(3, 1, 1)
    return ((np.broadcast_to(g, (3, cfg.size, cfg.size)) - mean) / std).astype(np.float32)
