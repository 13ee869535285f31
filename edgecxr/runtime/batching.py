"""The one batching path: split inputs into runner-sized chunks and join the named outputs. Torch-free.

Used by the runtime, the export gate, the bench and export itself.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the classes) in float64, stable for large logits."""
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def chunks(n: int, batch: int):
    """(start, stop) pairs covering range(n) in steps of ``batch``."""
    for i in range(0, n, max(1, batch)):
        yield i, min(n, i + max(1, batch))


def run_batched(runner, x: np.ndarray, batch: int | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Every named output of ``runner`` for ``x``, in chunks no larger than its maximum batch."""
    b = max(1, min(batch or runner.max_batch, runner.max_batch))
    parts: dict[str, list[np.ndarray]] = {}
    for i, j in chunks(len(x), b):
        for k, v in runner.run(x[i:j]).items():
            parts.setdefault(k, []).append(np.asarray(v))
        if progress is not None:
            progress(j - i)
    return {k: np.concatenate(v) for k, v in parts.items()}
