"""The runner base: bookkeeping once, engine code in subclasses (as Polygraphy's runners). Torch-free.

A runner is built from an artifact path and the sidecar's ``engine`` record and does one thing:
float32 (N, 3, H, W) in, named outputs out (``logits`` always; ``guard`` and others when the
artifact has them). Subclasses implement ``_run`` and ``_release`` and talk only to their engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BaseRunner:
    """Common checks, the lifecycle (``close()``, context manager) and what-runs bookkeeping."""

    def __init__(self, path: Path, engine: dict) -> None:
        self.path, self.engine = Path(path), dict(engine)
        self.max_batch: int = int(engine.get("max_batch") or 64)
        self.info: dict = {"precision": engine.get("precision")}
        self.closed = False

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs for one batch; ``x`` is cast to contiguous float32."""
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} for {self.path.name} is closed")
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {x.shape}")
        if len(x) > self.max_batch:
            raise ValueError(f"batch {len(x)} exceeds this artifact's maximum {self.max_batch}")
        return self._run(x)

    def metadata(self) -> dict | None:
        """edgecxr metadata embedded in the artifact (None when the format carries none)."""
        return None

    def throughput_mode(self, x: np.ndarray, seconds: float) -> dict | None:
        """Images/s in the engine's own throughput mode (several streams, asynchronous requests), each request fed
        the batch ``x``, with the mode's logits on ``x`` checked against ``run(x)``; None when the engine has no such
        mode. Used by the bench."""
        return None

    def close(self) -> None:
        """Free the engine's memory (sessions, compiled models, device buffers); idempotent."""
        if not self.closed:
            self.closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:
            pass

    # engine-specific
    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _release(self) -> None:
        pass


EMBEDDED_PREFIX = "edgecxr."


def decode_embedded(props: dict[str, str]) -> dict:
    """edgecxr metadata stored in an artifact as ``edgecxr.KEY -> JSON`` string pairs (ONNX metadata props)."""
    import json

    return {k[len(EMBEDDED_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(EMBEDDED_PREFIX)}


def encode_embedded(metadata: dict) -> dict[str, str]:
    import json

    return {EMBEDDED_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in sorted(metadata.items())}
