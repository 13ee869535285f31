"""Calibration and verification images as preprocessed numpy batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample, load_samples
from edgecxr.imaging import read_image
from edgecxr.preprocess import PreprocessConfig, preprocess


def load_images(folders: list[Path], cfg: PreprocessConfig, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[Sample]]:
    """Preprocess every image under ``folders`` (class-folder layout). Labels are -1 where unknown."""
    samples: list[Sample] = []
    for f in folders:
        samples += load_samples(Path(f), "folder")
    x = np.stack([preprocess(read_image(s.path), cfg) for s in samples])
    y = np.array([classes.index(s.label) if classes and s.label in classes else -1 for s in samples])
    return x, y, samples
