"""Image rules: refuse, from the decoded pixels alone, what cannot be a frontal chest radiograph. Torch-free.

They run before the model, on every input (DICOM or not), and complement the learned content check:

* Shape: a frontal CXR is roughly square (detectors are 35x43, 43x43 or 43x35 cm; the dev images span
  width/height 0.78-1.44). Outside 0.6-1.67 the input is something else - a half or a strip of an image, a
  long-leg or spine radiograph, a dental panoramic - and the model, which centre-crops, would read only
  part of it.
* Structure: the mean absolute Laplacian of the image at 128 x 128, relative to its standard deviation.
  Radiographs have edges everywhere (ribs, vessels, noise): the dev CXRs score 0.048-0.41. A smooth
  gradient, a blurred or blank field scores near 0 (a display test gradient: 0.0001).

Defaults can be changed per artifact in the sidecar's ``guard.image_rules``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def structure(gray: np.ndarray, size: int = 128) -> float:
    """Mean |Laplacian| of the image resized to ``size`` x ``size``, over its standard deviation."""
    from PIL import Image

    g = np.asarray(gray, np.float32)
    lo, hi = float(g.min()), float(g.max())
    im = Image.fromarray(((g - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    x = np.asarray(im, np.float64) / 255
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float(np.mean(np.abs(lap)) / (x.std() + 1e-9))


@dataclass
class ImageRules:
    min_aspect: float = 0.6  # width / height
    max_aspect: float = 1.67
    min_structure: float = 0.02
    enabled: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "ImageRules":
        if not d:
            return cls()
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown image rule(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self, gray: np.ndarray) -> str | None:
        """The reason to refuse this decoded image, or None."""
        if not self.enabled:
            return None
        h, w = gray.shape[:2]
        aspect = w / max(h, 1)
        if not self.min_aspect <= aspect <= self.max_aspect:
            return (f"not a frontal chest radiograph: the image is {w} x {h} px (width/height {aspect:.2f}; "
                    f"accepted {self.min_aspect:.2f}-{self.max_aspect:.2f}); send the whole, uncropped chest image")
        s = structure(gray)
        if s < self.min_structure:
            return (f"not a radiograph: the image has almost no fine structure (score {s:.4f} < {self.min_structure}; "
                    "a smooth gradient, a blank or heavily blurred field)")
        return None
