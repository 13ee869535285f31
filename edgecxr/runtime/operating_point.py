"""The finding at a model's operating point (torch-free): one rule for the runtime, the export gate and evaluation."""

from __future__ import annotations

import numpy as np


def finding_at(probs: np.ndarray, classes: list[str], positive: str, threshold: float) -> np.ndarray:
    """Class index of the finding per row: ``positive`` when its probability >= threshold, else the best other class."""
    probs = np.atleast_2d(probs)
    k = classes.index(positive)
    other = probs.copy()
    other[:, k] = -1
    return np.where(probs[:, k] >= threshold, k, other.argmax(1))


def findings(logits: np.ndarray, classes: list[str], op: dict) -> np.ndarray:
    """Class index of the finding per row from raw logits and an operating point (``temperature``, ``positive_class``,
    ``threshold``), as the runtime computes it."""
    from edgecxr.runtime.batching import softmax

    return finding_at(softmax(np.asarray(logits, np.float64) / float(op.get("temperature", 1.0))), classes,
                      op["positive_class"], op["threshold"])
