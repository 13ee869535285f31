"""PyTorch -> ONNX (FP32): opset 17+, dynamic batch, simplified, metadata props, onnx.checker."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model, path: Path, size: int = 224, opset: int = 18, batch: int | None = None,
                metadata: dict | None = None, simplify: bool = True, output_names: list[str] | None = None) -> Path:
    """Trace ``model`` to ONNX at ``path``. ``batch=None`` gives a dynamic batch dimension.

    Uses torch's TorchScript-based exporter (fast, and its graph is what OpenVINO and TensorRT
    parse best); falls back to the dynamo exporter where the former is gone.
    """
    import onnx
    import torch

    model = model.eval()
    x = torch.zeros(batch or 2, 3, size, size)
    outs = output_names or [OUTPUT_NAME]
    dyn = None if batch else {INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outs}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=outs, dynamic_axes=dyn, do_constant_folding=True)
            proto = onnx.load_from_string(buf.getvalue())
        except (TypeError, RuntimeError, AttributeError):  # legacy exporter removed
            shapes = None if batch else ({0: torch.export.Dim("batch", min=1, max=1024)},)
            prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                     output_names=outs, dynamic_shapes=shapes)
            proto = prog.model_proto
    if simplify:
        proto = _simplify(proto)
    set_metadata(proto, metadata or {})
    onnx.checker.check_model(proto, full_check=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return Path(path)


def _simplify(proto):
    try:
        import onnxslim
    except ImportError:  # optional: constant folding already happened in the exporter
        return proto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(proto)


def set_metadata(proto, metadata: dict) -> None:
    """Store each key as an ONNX metadata prop (JSON-encoded values)."""
    from edgecxr.runtime.base import encode_embedded

    del proto.metadata_props[:]
    for k, v in encode_embedded(metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def get_metadata(path_or_proto) -> dict:
    import onnx

    proto = onnx.load(str(path_or_proto), load_external_data=False) if isinstance(path_or_proto, (str, Path)) else path_or_proto
    from edgecxr.runtime.base import decode_embedded

    return decode_embedded({p.key: p.value for p in proto.metadata_props})
