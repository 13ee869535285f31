"""OpenVINO IR from ONNX: FP32 (uncompressed), FP16 (compressed weights), INT8 (NNCF PTQ)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def to_openvino(onnx_path: Path, out_xml: Path, precision: str, calib: np.ndarray | None = None,
                int8: dict | None = None, metadata: dict | None = None) -> Path:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if precision == "int8":
        import nncf

        if calib is None:
            raise ValueError("INT8 needs calibration images")
        opts = int8 or {}
        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE,
                  "mixed": nncf.QuantizationPreset.MIXED}[opts.get("preset", "performance")]
        ds = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
        ignored = None
        if opts.get("exclude"):  # ONNX node names; the IR's op names derive from them
            ignored = nncf.IgnoredScope(patterns=[f".*{n}.*" for n in opts["exclude"]], validate=False)
        model = nncf.quantize(model, ds, preset=preset, subset_size=min(int(opts.get("subset_size", 300)), len(calib)),
                              fast_bias_correction=bool(opts.get("fast_bias_correction", True)), ignored_scope=ignored)
    for k, v in (metadata or {}).items():  # read back by the runtime to cross-check the sidecar
        model.set_rt_info(json.dumps(v, sort_keys=True), ["edgecxr", k])
    ov.save_model(model, str(out_xml), compress_to_fp16=(precision == "fp16"))
    return Path(out_xml)
