"""OpenVINO IR from ONNX: FP32 (uncompressed), FP16 (compressed weights), INT8 (NNCF PTQ)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgecxr.export.onnx_build import resolve_reduce_range


def build(ctx, target, tmp: Path) -> tuple[Path, dict]:
    """Builder for the ``openvino`` backend."""
    import openvino as ov

    from edgecxr.backends import REGISTRY

    fp32 = ctx.fp32_onnx(target, tmp)
    out = tmp / REGISTRY["openvino"].artifact_name
    to_openvino(fp32, out, target.precision, calib=ctx.calib() if target.precision == "int8" else None,
                int8=target.int8, metadata=ctx.metadata())
    o = target.openvino
    engine = {"version": ov.get_version(), "device": o.device, "inference_precision": o.inference_precision,
              "performance_hint": o.performance_hint, "static_shapes": o.static_shapes}
    if target.precision == "int8":
        engine["int8"] = {"preset": target.int8.preset, "source": target.int8.source,
                          "calibration": target.int8.calibration if target.int8.source == "ort-qdq" else "nncf",
                          "calibration_images": int(len(ctx.calib())),
                          "float_nodes": list(target.int8.exclude),
                          **({"split_weights": list(target.int8.split_weights)} if target.int8.split_weights else {})}
        if target.int8.source == "ort-qdq":  # as to_openvino resolved it (NNCF has no such knob)
            engine["int8"]["reduce_range"] = resolve_reduce_range(target.int8.reduce_range, "openvino")
    return out, engine


def guard_ignored_scope(onnx_path: Path, exclude: list[str]):
    """NNCF scope kept float: the guard-only nodes by name, MatMuls (classifier, guard) and the target's
    excluded convs (the IR's names derive from ONNX's)."""
    import nncf

    from edgecxr.export.onnx_int8 import output_only_nodes

    return nncf.IgnoredScope(names=output_only_nodes(onnx_path), patterns=[f".*{n}.*" for n in exclude],
                             types=["MatMul"], validate=False)


def to_openvino(onnx_path: Path, out_xml: Path, precision: str, calib: np.ndarray | None = None,
                int8=None, metadata: dict | None = None) -> Path:
    import openvino as ov

    from edgecxr.export.targets import Int8Options

    opts = int8 or Int8Options()
    if precision == "int8" and calib is None:
        raise ValueError("INT8 needs calibration images")
    if precision == "int8" and opts.source == "nncf" and opts.split_weights:
        from edgecxr.export.targets import TargetError

        raise TargetError("[int8] split_weights needs source = \"ort-qdq\" (NNCF quantizes on a grid of its own)")
    if precision == "int8" and opts.source == "ort-qdq":
        # ONNX Runtime's static quantization (Q/DQ, its calibration methods) read by OpenVINO, which runs the
        # Q/DQ pairs as int8 kernels; the guard-only nodes stay float as in every INT8 form
        from edgecxr.export.onnx_int8 import quantize_onnx

        qdq = Path(out_xml).with_suffix(".qdq.onnx")
        quantize_onnx(onnx_path, qdq, calib, fmt="qdq", method=opts.calibration, per_channel=opts.per_channel,
                      reduce_range=resolve_reduce_range(opts.reduce_range, "openvino"), exclude=list(opts.exclude),
                      split_weights=list(opts.split_weights))
        model = ov.convert_model(str(qdq))
        qdq.unlink()
    else:
        model = ov.convert_model(str(onnx_path))
    if precision == "int8" and opts.source == "nncf":
        import nncf

        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE,
                  "mixed": nncf.QuantizationPreset.MIXED}[opts.preset]
        ds = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
        ignored = guard_ignored_scope(onnx_path, opts.exclude)
        model = nncf.quantize(model, ds, preset=preset, subset_size=min(opts.subset_size, len(calib)),
                              fast_bias_correction=opts.fast_bias_correction, ignored_scope=ignored)
    for k, v in (metadata or {}).items():  # read back by the runtime to cross-check the sidecar
        model.set_rt_info(json.dumps(v, sort_keys=True), ["edgecxr", k])
    ov.save_model(model, str(out_xml), compress_to_fp16=(precision == "fp16"))
    return Path(out_xml)


def stamp_openvino(xml: Path, metadata: dict) -> None:
    """Rewrite the IR's edgecxr rt_info (weights unchanged: no re-compression)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    for k, v in metadata.items():
        model.set_rt_info(json.dumps(v, sort_keys=True), ["edgecxr", k])
    tmp = Path(xml).with_name("stamped.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    os.replace(tmp, xml)
    os.replace(tmp.with_suffix(".bin"), Path(xml).with_suffix(".bin"))
