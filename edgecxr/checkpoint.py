"""Exportable checkpoints: fp16/fp32 safetensors with edgecxr metadata in the header, plus a JSON sidecar.

The metadata (arch, classes, preprocessing, training data, metrics) travels inside the safetensors
header so the weights file alone is self-describing; the ``.json`` beside it repeats it with the
file's sha256 for people and tools.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecxr.artifact import atomic_write_bytes, sha256_file
from edgecxr.errors import WeightsError

META_KEY = "edgecxr"
GUARD_PREFIX = "guard."  # the input guard's statistics travel as tensors beside the weights
GUARD_FP32 = {"guard.mean", "guard.components", "guard.inv_lambda", "guard.center", "guard.weight"}  # kept float32 (the k-NN bank is fine in fp16)


def save_checkpoint(state: dict, meta: dict, path: Path, half: bool = True) -> Path:
    """Write ``state`` (a model state dict) and ``meta`` atomically; return the path."""
    from safetensors.torch import save

    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point() and "running_" not in k and k not in GUARD_FP32:
            v = v.half()
        tensors[k] = v
    blob = save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    path = Path(path)
    atomic_write_bytes(path, blob)
    sidecar = dict(meta, file=path.name, bytes=path.stat().st_size, sha256=sha256_file(path))
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
    return path


def _meta_from_header(data: bytes, path: Path) -> dict:
    """edgecxr metadata from the first bytes of a safetensors file (8-byte length + JSON header)."""
    n = int.from_bytes(data[:8], "little")
    try:
        if not 0 < n <= len(data) - 8:
            raise ValueError("bad header length")
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc}); it may be corrupt or truncated.") from exc
    raw = header.get("__metadata__", {}).get(META_KEY)
    if raw is None:
        raise WeightsError(f"{path}: safetensors file without edgecxr metadata; was it written by edgecxr?")
    return json.loads(raw)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors come back as float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    meta = _meta_from_header(data, path)
    try:
        state = load(data)
    except (SafetensorError, ValueError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc}); it may be corrupt or truncated.") from exc
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, meta


def read_meta(path: Path) -> dict:
    """Only the metadata of a checkpoint (reads the header, not the tensors)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return _meta_from_header(head + fh.read(min(n, 100_000_000)), path)


def load_model(path: Path):
    """Build the model a checkpoint describes and load its weights (eval mode)."""
    from edgecxr.models import build_model

    state, meta = load_checkpoint(path)
    guard_t = {k[len(GUARD_PREFIX):]: state.pop(k).numpy() for k in [k for k in state if k.startswith(GUARD_PREFIX)]}
    if guard_t and "guard" in meta:
        meta["guard"] = dict(meta["guard"], **guard_t)
    model = build_model(meta["arch"], num_classes=len(meta["classes"]), **meta.get("model_kwargs", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit {meta['arch']} ({str(exc).splitlines()[0]})") from exc
    return model.eval(), meta
