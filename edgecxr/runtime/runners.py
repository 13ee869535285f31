"""One small runner interface for every engine: float32 (N, 3, H, W) in, logits (N, classes) out.

A runner is built from an artifact path and the sidecar's ``engine`` record. It reports what
actually runs (``info``: engine, version, precision, threads, device) and its ``max_batch``.
Everything else (batch splitting, preprocessing, softmax, labels, verification) lives once in
:mod:`edgecxr.runtime`. Torch-free.

Thread safety: ONNX Runtime's ``InferenceSession.run`` and OpenVINO's ``CompiledModel`` (one
infer request per call) may be called from several threads on one runner. The TensorRT runner
holds one execution context and serialises calls with a lock.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from edgecxr.errors import ArtifactError, BackendUnavailable


class Runner(Protocol):
    info: dict
    max_batch: int

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def metadata(self) -> dict | None: ...


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class OnnxRunner:
    """ONNX Runtime (CPU by default; CUDA when onnxruntime-gpu and a GPU are present and asked for)."""

    def __init__(self, path: Path, engine: dict, threads: int | None = None, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("ONNX Runtime is not installed: pip install onnxruntime") from exc
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self._sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        b = self._sess.get_inputs()[0].shape[0]
        self.max_batch = int(engine.get("max_batch") or (b if isinstance(b, int) else 64))
        self.info = {"engine": "onnxruntime", "version": ort.__version__, "precision": engine.get("precision", "fp32"),
                     "providers": self._sess.get_providers(), "threads": threads or "default", "device": "CPU"
                     if self._sess.get_providers()[0] == "CPUExecutionProvider" else "GPU"}

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._input: np.ascontiguousarray(x, np.float32)})[0]

    def metadata(self) -> dict:
        """edgecxr.* metadata props stored in the ONNX file."""
        meta = self._sess.get_modelmeta().custom_metadata_map
        return {k[len("edgecxr."):]: json.loads(v) for k, v in meta.items() if k.startswith("edgecxr.")}


class OpenVINORunner:
    """OpenVINO on its CPU plugin (or GPU/NPU named in the sidecar)."""

    def __init__(self, path: Path, engine: dict, threads: int | None = None, inference_precision: str | None = None,
                 hint: str | None = None, device: str | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("OpenVINO is not installed: pip install 'edgecxr[openvino]'") from exc
        core = ov.Core()
        device = device or engine.get("device", "CPU")
        cfg = {"PERFORMANCE_HINT": hint or engine.get("performance_hint", "LATENCY")}
        prec = inference_precision or engine.get("inference_precision", "default")
        if prec and prec != "default":
            cfg["INFERENCE_PRECISION_HINT"] = prec
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(path))
        self._meta = {k: json.loads(model.get_rt_info(["edgecxr", k]).astype(str))
                      for k in ("classes", "preprocess") if model.has_rt_info(["edgecxr", k])}
        self._compiled = core.compile_model(model, device, cfg)
        self._local = threading.local()
        self.max_batch = int(engine.get("max_batch") or 64)
        actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        actual = actual.to_string() if hasattr(actual, "to_string") else str(actual)
        self.info = {"engine": "openvino", "version": ov.get_version(), "precision": engine.get("precision"),
                     "inference_precision": actual or None,
                     "performance_hint": cfg["PERFORMANCE_HINT"], "threads": threads or "default", "device": device}

    def metadata(self) -> dict:
        """classes/preprocess stored in the IR's rt_info."""
        return dict(self._meta)

    def run(self, x: np.ndarray) -> np.ndarray:
        req = getattr(self._local, "req", None)
        if req is None:
            req = self._local.req = self._compiled.create_infer_request()
        req.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(req.get_output_tensor(0).data, copy=True)


class TensorRTRunner:
    """TensorRT engine with device buffers through cuda-python (preferred) or pycuda."""

    def __init__(self, path: Path, engine: dict, **_: object) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable("TensorRT is not installed: pip install 'edgecxr[tensorrt]' "
                                     "(on Jetson it comes with JetPack).") from exc
        from edgecxr.runtime.cuda_mem import CudaMemory

        built = engine.get("tensorrt_version")
        if built and built.split(".")[:2] != trt.__version__.split(".")[:2] and not engine.get("version_compatible"):
            raise ArtifactError(f"{path}: engine built with TensorRT {built}, this is {trt.__version__}; "
                                "rebuild it on this machine (edgecxr export --target ...).")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if engine.get("version_compatible"):
            runtime.engine_host_code_allowed = True
        self._engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{path}: TensorRT could not deserialize the engine (wrong GPU or TensorRT version?).")
        self._ctx = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._in = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._out = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = int(engine.get("max_batch", 1))
        self._mem = CudaMemory()
        self._lock = threading.Lock()
        self.info = {"engine": "tensorrt", "version": trt.__version__, "precision": engine.get("precision"),
                     "device": engine.get("gpu", "GPU"), "cuda_binding": self._mem.binding, "threads": 1}

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        with self._lock:
            self._ctx.set_input_shape(self._in, x.shape)
            out_shape = tuple(self._ctx.get_tensor_shape(self._out))
            out = np.empty(out_shape, np.float32)
            d_in, d_out = self._mem.alloc(x.nbytes, "in"), self._mem.alloc(out.nbytes, "out")
            self._ctx.set_tensor_address(self._in, d_in)
            self._ctx.set_tensor_address(self._out, d_out)
            self._mem.h2d(d_in, x)
            if not self._ctx.execute_async_v3(self._mem.stream_handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self._mem.d2h(out, d_out)
            self._mem.sync()
        return out

    def metadata(self) -> None:
        """Engines carry no edgecxr metadata (the sidecar's sha256 guards them)."""
        return None


RUNNERS = {"onnx": OnnxRunner, "openvino": OpenVINORunner, "tensorrt": TensorRTRunner}


def make_runner(path: Path, engine: dict, **options) -> Runner:
    backend = engine.get("backend")
    if backend not in RUNNERS:
        raise ArtifactError(f"{path}: unknown backend {backend!r} in sidecar.")
    return RUNNERS[backend](Path(path), engine, **options)


def backend_available(backend: str) -> tuple[bool, str]:
    """Whether a backend can run here, and why not."""
    if backend == "onnx":
        return (_version("onnxruntime") or _version("onnxruntime-gpu")) is not None, "pip install onnxruntime"
    if backend == "openvino":
        return _version("openvino") is not None, "OpenVINO not installed: pip install 'edgecxr[openvino]'"
    if backend == "tensorrt":
        from edgecxr.hardware import gpu_info

        if _version("tensorrt") is None and _version("tensorrt-cu12") is None and _version("tensorrt-cu13") is None:
            try:
                import tensorrt  # noqa: F401  (JetPack installs it outside pip)
            except ImportError:
                return False, "TensorRT not installed (pip install 'edgecxr[tensorrt]', or JetPack on Jetson)"
        if not gpu_info() and not Path("/etc/nv_tegra_release").exists():
            return False, "no NVIDIA GPU"
        return True, ""
    return False, f"unknown backend {backend}"
