"""TensorRT engine from ONNX as a strongly typed network (TensorRT 10.x and 11.x).

Precision comes from the ONNX graph, not from builder flags: an FP16-cast ONNX for FP16, a
symmetric Q/DQ ONNX for INT8. On TensorRT 10 (JetPack 6) we pass
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; on 11 strong typing is always on and
``BuilderFlag.FP16/INT8`` and the INT8 calibrators no longer exist, so we never use them.
The engine file holds only TensorRT's bytes (trtexec can load it); metadata goes in the sidecar.

NOT VERIFIED ON HARDWARE until a GPU run is recorded in ``benchmarks/``.
"""

from __future__ import annotations

from pathlib import Path

from edgecxr.errors import BackendUnavailable


def require_tensorrt():
    """Import TensorRT or raise BackendUnavailable saying what is missing."""
    from edgecxr.backends import backend_available

    ok, why = backend_available("tensorrt")
    if not ok:
        raise BackendUnavailable(f"cannot build a TensorRT engine here: {why}. Build on the target GPU/Jetson with "
                                 "`pip install 'edgecxr[train,tensorrt]'` (JetPack ships TensorRT).")
    import tensorrt as trt

    return trt


def network_flags(trt) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def prepare_onnx(ctx, target, tmp: Path) -> Path:
    """The ONNX that TensorRT parses: FP16-cast for fp16, symmetric Q/DQ for int8, plain for fp32."""
    import shutil

    fp32 = ctx.fp32_onnx(target, tmp)
    out = tmp / f"model.trt-{target.precision}.onnx"
    if target.precision == "fp16":
        from edgecxr.export.onnx_fp16 import cast_fp16

        cast_fp16(fp32, out)
    elif target.precision == "int8":
        from edgecxr.export.onnx_int8 import quantize_onnx

        quantize_onnx(fp32, out, ctx.calib(), fmt="qdq", method=target.int8.calibration,
                      per_channel=target.int8.per_channel, exclude=list(target.int8.exclude))
    else:
        shutil.copyfile(fp32, out)
    return out


def build(ctx, target, tmp: Path) -> tuple[Path, dict]:
    """Builder for the ``tensorrt`` backend (raises BackendUnavailable after writing the prepared ONNX)."""
    from edgecxr.backends import REGISTRY
    from edgecxr.export.onnx_fp32 import INPUT_NAME

    src = prepare_onnx(ctx, target, tmp)
    require_tensorrt()
    out = tmp / REGISTRY["tensorrt"].artifact_name
    engine = build_engine(src, out, INPUT_NAME, ctx.size, target.min_batch, target.opt_batch, target.max_batch,
                          target.tensorrt)
    engine["source_onnx"] = src.name
    return out, engine


def build_engine(onnx_path: Path, out: Path, input_name: str, size: int, min_batch: int, opt_batch: int,
                 max_batch: int, options) -> dict:
    """Build and write a serialized engine; return the engine facts for the sidecar."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser failed on {onnx_path}: {errors}")
    config = builder.create_builder_config()
    from dataclasses import asdict, is_dataclass

    options = asdict(options) if is_dataclass(options) else dict(options)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.get("workspace_mib", 2048)) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (min_batch, 3, size, size), (opt_batch, 3, size, size), (max_batch, 3, size, size))
    config.add_optimization_profile(profile)

    cache_path = Path(options.get("timing_cache", "")).expanduser() if options.get("timing_cache") else None
    blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=True)

    level = options.get("hardware_compatibility", "none")
    if level != "none":
        config.hardware_compatibility_level = {
            "ampere_plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
            "same_compute_capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
        }[level]
    if options.get("version_compatible"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    dla = int(options.get("dla_core", -1))
    if dla >= 0:
        if builder.num_DLA_cores <= dla:
            raise BackendUnavailable(f"DLA core {dla} requested, this device has {builder.num_DLA_cores}.")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above).")
    Path(out).write_bytes(bytes(serialized))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    from edgecxr.hardware import gpu_info, jetson_info

    gpus = gpu_info()
    return {"tensorrt_version": trt.__version__, "strongly_typed": True,
            "gpu": gpus[0]["name"] if gpus else (jetson_info() or {}).get("model"),
            "compute_capability": gpus[0]["compute_capability"] if gpus else None,
            "hardware_compatibility": level, "version_compatible": bool(options.get("version_compatible")),
            "dla_core": dla}
