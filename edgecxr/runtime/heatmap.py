"""Class-activation maps from any exported artifact, in numpy (torch-free).

The artifact outputs the spatial maps the classifier reads (``maps0``, ``maps1``, ...; for
Covid-DenseNet each scale's fused map already multiplied by its learned scale weight) and carries the
classifier's weight and bias (sidecar ``heatmap``). Because the classifier is linear in the spatially
averaged maps, ``CAM_c = sum_i upsample(W[c, block_i] . maps_i)`` has ``mean(CAM_c) = logit_c - bias_c``:
it shows where the evidence for class c lies, with no gradient and no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    fy, fx = size[0] // m.shape[0], size[1] // m.shape[1]
    return np.repeat(np.repeat(m, fy, axis=0), fx, axis=1)


def class_activation_map(maps: list[np.ndarray], record: dict, cls: int) -> np.ndarray:
    """Raw CAM (H, W) of class ``cls`` for one image; ``maps``: that image's (C_i, H_i, W_i) arrays."""
    w = np.asarray(record["weight"], np.float64)[cls]
    size = max((m.shape[1:] for m in maps), key=lambda s: s[0] * s[1])
    out = np.zeros(size, np.float64)
    col = 0
    for m in maps:
        c = m.shape[0]
        out += _upsample(np.tensordot(w[col:col + c], np.asarray(m, np.float64), axes=1), size)
        col += c
    return out


def normalise(cam: np.ndarray) -> np.ndarray:
    """ReLU then scale to [0, 1] (all zero when there is no positive evidence)."""
    cam = np.maximum(cam, 0)
    top = cam.max()
    return cam / top if top > 0 else cam


def overlay_png(gray: np.ndarray, cam: np.ndarray, path: Path, caption: str) -> None:
    """The radiograph (the model's view of it) with the map in a colour scale and a caption."""
    from PIL import Image, ImageDraw

    try:
        from matplotlib import colormaps

        lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    except ImportError:  # no matplotlib on the device: a black-red-yellow ramp
        t = np.linspace(0, 1, 256)
        lut = (np.stack([np.clip(2 * t, 0, 1), np.clip(2 * t - 1, 0, 1), np.zeros_like(t)], 1) * 255).astype(np.uint8)
    h, w = gray.shape
    heat = np.asarray(Image.fromarray((normalise(cam) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))
    g = np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, 2).astype(np.float32)
    alpha = 0.45 * (heat[..., None] / 255.0)
    rgb = (g * (1 - alpha) + lut[heat].astype(np.float32) * alpha).astype(np.uint8)
    canvas = Image.new("RGB", (w, h + 22), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    ImageDraw.Draw(canvas).text((4, h + 4), caption, fill=(255, 255, 255))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])
