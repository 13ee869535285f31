"""Builder for the ``onnx`` backend: FP32 copy, FP16 cast, or INT8 (ONNX Runtime static quantization)."""

from __future__ import annotations

import shutil
from pathlib import Path


def stamp_onnx(path: Path, metadata: dict) -> None:
    """Write edgecxr metadata into an ONNX file (quantizers and casts drop it)."""
    import onnx

    from edgecxr.export.onnx_fp32 import set_metadata

    m = onnx.load(str(path))
    set_metadata(m, metadata)
    onnx.save(m, str(path))


def resolve_reduce_range(value, backend: str = "onnx") -> bool:
    """``"auto"``: 7-bit weights on x86 CPUs without VNNI, where U8S8 products can saturate (vpmaddubsw); for
    ``backend`` the engine that will run them (OpenVINO's kernels follow oneDNN's ISA cap, ONNX Runtime's do not)."""
    if value != "auto":
        return bool(value)
    from edgecxr.hardware import isa_class, x86_int8_dot

    return x86_int8_dot(isa_class(backend=backend)) is False


# Graph rewrites of ONNX Runtime's session optimizer (1.32) that INT8 artifacts turn off (named in the sidecar; the
# runner passes them on, so the gate measures what runs):
# - WeightBiasQuantization quantizes the float weights of a Conv that sits between a DequantizeLinear and a
#   QuantizeLinear: exactly the layers the mixed-precision search keeps float, which would run as int8 again, with
#   weights ONNX Runtime quantized itself (8-bit, whatever ``reduce_range`` says)
#   (`tests/test_export.py::test_onnx_int8_float_nodes_stay_float_at_runtime`).
# - QDQPropagationTransformer moves a QuantizeLinear up through a MaxPool. Behind the float stem conv that turns the
#   stem's max-pool into a uint8 MaxPool on the 4x larger NCHW map (2.0 of 19.9 ms at batch 1, the top layer of the
#   shipped model's profile) instead of the float NCHWc one fused behind the conv; the numbers are the same (quantizing
#   commutes with max: the test checks bit-identical outputs), the batch-1 latency 8% lower (23.7 -> 21.7 ms, AMD EPYC
#   AVX-512 VNNI, slow host phase: benchmarks/results/latency-ab-onnx-int8-pool-76fa283b-epyc.txt).
KEEP_FLOAT_OFF = ["WeightBiasQuantization", "QDQPropagationTransformer"]


def build(ctx, target, tmp: Path) -> tuple[Path, dict]:
    import onnxruntime

    from edgecxr.backends import REGISTRY

    fp32 = ctx.fp32_onnx(target, tmp)
    out = tmp / REGISTRY["onnx"].artifact_name
    engine: dict = {"version": onnxruntime.__version__}
    if target.precision == "fp32":
        shutil.copyfile(fp32, out)
    elif target.precision == "int8":
        from edgecxr.export.onnx_int8 import quantize_onnx

        o = target.int8
        reduce_range = resolve_reduce_range(o.reduce_range)
        quantize_onnx(fp32, out, ctx.calib(), fmt=o.format, method=o.calibration, per_channel=o.per_channel,
                      reduce_range=reduce_range, bn_to_conv=o.bn_to_conv, exclude=list(o.exclude),
                      shared_concat_scales=o.shared_concat_scales, split_weights=list(o.split_weights))
        stamp_onnx(out, ctx.metadata())
        engine["int8"] = {"format": o.format, "calibration": o.calibration, "calibration_images": int(len(ctx.calib())),
                          "reduce_range": reduce_range, "bn_to_conv": o.bn_to_conv, "float_nodes": list(o.exclude),
                          "shared_concat_scales": o.shared_concat_scales,
                          **({"split_weights": list(o.split_weights)} if o.split_weights else {})}
        engine["disabled_optimizers"] = list(KEEP_FLOAT_OFF)
    else:
        from edgecxr.export.onnx_fp16 import cast_fp16

        cast_fp16(fp32, out)
        stamp_onnx(out, ctx.metadata())
    return out, engine
