"""The engine runners: ONNX Runtime, OpenVINO, TensorRT, each on :class:`BaseRunner`. Torch-free.

Each class talks only to its engine and imports it lazily; bookkeeping (shape checks, lifecycle)
lives once in the base, batching once in :mod:`edgecxr.runtime.batching`, and which class serves
which backend once in :mod:`edgecxr.backends`.

Thread safety: ONNX Runtime's ``InferenceSession.run`` and OpenVINO's ``CompiledModel`` (one
infer request per thread) may be called from several threads on one runner. The TensorRT runner
holds one execution context and serialises calls with a lock.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from pathlib import Path

import numpy as np

from edgecxr.backends import get_backend
from edgecxr.errors import ArtifactError, BackendUnavailable
from edgecxr.runtime.base import BaseRunner, decode_embedded

MAX_STATIC_BATCHES = 4  # batch sizes an OpenVINO runner compiles a static-shape model for


def onnx_session_kwargs(engine: dict) -> dict:
    """``InferenceSession`` keyword arguments an artifact's sidecar asks for: the graph rewrites its export turned off
    (INT8: keeps the float layers float; see edgecxr/export/onnx_build.py)."""
    off = list(engine.get("disabled_optimizers") or [])
    return {"disabled_optimizers": off} if off else {}


class OnnxRunner(BaseRunner):
    """ONNX Runtime (CPU by default; CUDA when onnxruntime-gpu and a GPU are present and asked for)."""

    def __init__(self, path: Path, engine: dict, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__(path, engine)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("ONNX Runtime is not installed: pip install onnxruntime") from exc
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self._sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"],
                                          **onnx_session_kwargs(engine))
        self._input = self._sess.get_inputs()[0].name
        self._outputs = [o.name for o in self._sess.get_outputs()]
        b = self._sess.get_inputs()[0].shape[0]
        self.max_batch = int(engine.get("max_batch") or (b if isinstance(b, int) else 64))
        self.info = {"engine": "onnxruntime", "version": ort.__version__, "precision": engine.get("precision", "fp32"),
                     "providers": self._sess.get_providers(), "threads": threads or "default", "device": "CPU"
                     if self._sess.get_providers()[0] == "CPUExecutionProvider" else "GPU"}

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._sess.run(self._outputs, {self._input: x})))

    def _release(self) -> None:
        self._sess = None

    def metadata(self) -> dict:
        """edgecxr.* metadata props stored in the ONNX file."""
        return decode_embedded(self._sess.get_modelmeta().custom_metadata_map)


def _capped_without_bf16() -> bool:
    """True when ONEDNN_MAX_CPU_ISA leaves OpenVINO's CPU plugin no bf16 kernels on this CPU."""
    from edgecxr.hardware import isa_class, onednn_cap

    if onednn_cap() is None:
        return False
    return not any("BF16" in f for f in isa_class(backend="openvino")["isa"])


class OpenVINORunner(BaseRunner):
    """OpenVINO on its CPU plugin (or GPU/NPU named in the sidecar)."""

    def __init__(self, path: Path, engine: dict, threads: int | None = None, inference_precision: str | None = None,
                 hint: str | None = None, device: str | None = None) -> None:
        super().__init__(path, engine)
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
        elif device.upper().startswith("CPU") and _capped_without_bf16():
            # the plugin picks bf16 from CPUID, but oneDNN's cap leaves no bf16 kernels: f32 is what the capped
            # ISA's CPUs run by default (without this, compiling fails: no primitive for a bf16 pooling node)
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(path))
        self._core, self._device, self._cfg = core, device, cfg
        self._meta = {k: json.loads(model.get_rt_info(["edgecxr", k]).astype(str))
                      for k in EMBEDDED_KEYS if model.has_rt_info(["edgecxr", k])}
        self._outputs = [o.get_any_name() for o in model.outputs]
        try:
            self._compiled = core.compile_model(model, device, cfg)
        except RuntimeError as exc:  # the plugin's message is a stack of "Exception from ..." lines: keep the cause
            lines = [x.strip() for x in str(exc).splitlines() if x.strip() and not x.startswith("Exception from")]
            raise ArtifactError(f"{path}: OpenVINO could not compile it for {device} with {cfg}: "
                                f"{' '.join(lines)[:300] or exc}") from exc
        # Opt-in (target [openvino] static_shapes = true; recorded in the engine, so the export gate verifies it):
        # a model compiled per batch size (a few at most; batch 1 at load) runs faster than the dynamic one (batch 1,
        # INT8, 2-core AVX-512 VNNI: 12.5 vs 13.8 ms), but OpenVINO then picks other kernels: the shipped INT8
        # model went from 1 to 2 flips of 222 in the gate and failed it.
        dims = model.inputs[0].get_partial_shape()
        self._static = (bool(engine.get("static_shapes", False)) and dims.rank.is_static and dims[0].is_dynamic
                        and all(dims[i].is_static for i in range(1, dims.rank.get_length())))
        self._by_batch: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        if self._static:
            self._for_batch(1)
        self.max_batch = int(engine.get("max_batch") or 64)
        actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        actual = actual.to_string() if hasattr(actual, "to_string") else str(actual)
        self.info = {"engine": "openvino", "version": ov.get_version(), "precision": engine.get("precision"),
                     "inference_precision": actual or None,
                     "performance_hint": cfg["PERFORMANCE_HINT"], "threads": threads or "default", "device": device}

    def metadata(self) -> dict:
        """classes/preprocess stored in the IR's rt_info."""
        return dict(self._meta)

    def _for_batch(self, b: int):
        """The compiled model for batch ``b``: a static-shape one (compiled once) or the dynamic one."""
        if not self._static:
            return self._compiled
        with self._lock:
            if b not in self._by_batch and len(self._by_batch) < MAX_STATIC_BATCHES:
                m = self._core.read_model(str(self.path))
                dims = m.inputs[0].get_partial_shape()
                m.reshape({m.inputs[0].get_any_name(): [b] + [dims[i].get_length() for i in range(1, dims.rank.get_length())]})
                self._by_batch[b] = self._core.compile_model(m, self._device, self._cfg)
            return self._by_batch.get(b, self._compiled)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        reqs = getattr(self._local, "reqs", None)
        if reqs is None:
            reqs = self._local.reqs = {}
        b = int(x.shape[0]) if self._static else 0  # the dynamic model: one request for every batch size
        req = reqs.get(b)
        if req is None:
            req = reqs[b] = self._for_batch(int(x.shape[0])).create_infer_request()
        req.infer({0: x})
        return {n: np.array(req.get_output_tensor(i).data, copy=True) for i, n in enumerate(self._outputs)}

    def throughput_mode(self, x: np.ndarray, seconds: float) -> dict | None:
        """OpenVINO's THROUGHPUT hint with an AsyncInferQueue of the optimal number of requests, each fed ``x`` (as
        benchmark_app measures throughput, with ``-b`` for a batch); compiled separately, the latency model is
        untouched. Its logits on ``x`` are compared with the latency model's (``max_abs_diff_vs_latency``)."""
        cfg = {k: v for k, v in self._cfg.items() if k != "PERFORMANCE_HINT"}
        # read again rather than keep the ov.Model alive for the runner's lifetime (device memory)
        m = self._core.read_model(str(self.path))
        if self._static:
            m.reshape({m.inputs[0].get_any_name(): list(x.shape)})
        compiled = self._core.compile_model(m, self._device, dict(cfg, PERFORMANCE_HINT="THROUGHPUT"))
        x = np.ascontiguousarray(x, np.float32)
        images_per_s, n_req = async_images_per_s(compiled, x, seconds)
        streams = compiled.get_property("NUM_STREAMS")
        # a faster mode that computes something else is not a faster mode: compare with the latency model
        req = compiled.create_infer_request()
        req.infer({0: x})
        got = np.array(req.get_output_tensor(self._outputs.index("logits")).data, copy=True)
        ref = self._run(x)["logits"]
        del req, compiled
        return {"mode": "THROUGHPUT", "requests": n_req, "streams": int(streams) if str(streams).isdigit() else str(streams),
                "batch": len(x), "images_per_s": images_per_s,
                "max_abs_diff_vs_latency": float(np.abs(got - ref).max()),
                "argmax_agreement_vs_latency": float(np.mean(got.argmax(1) == ref.argmax(1)))}

    def _release(self) -> None:
        self._local = threading.local()
        self._compiled = None


def async_images_per_s(compiled, x: np.ndarray, seconds: float) -> tuple[float, int]:
    """Images/s of an OpenVINO compiled model fed ``x`` by an AsyncInferQueue of its optimal number of requests for
    ``seconds`` (after one warm-up round), and that number of requests."""
    import time

    import openvino as ov

    n_req = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, n_req)
    for _ in range(n_req):  # warm-up
        queue.start_async({0: x})
    queue.wait_all()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(n_req):
            queue.start_async({0: x})
        queue.wait_all()
        done += n_req
    return done * len(x) / (time.perf_counter() - start), n_req


class TensorRTRunner(BaseRunner):
    """TensorRT engine with device buffers through cuda-python (preferred) or pycuda."""

    def __init__(self, path: Path, engine: dict, **_: object) -> None:
        super().__init__(path, engine)
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
        self._outs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.max_batch = int(engine.get("max_batch", 1))
        self._mem = CudaMemory()
        self._lock = threading.Lock()
        self.info = {"engine": "tensorrt", "version": trt.__version__, "precision": engine.get("precision"),
                     "device": engine.get("gpu", "GPU"), "cuda_binding": self._mem.binding, "threads": 1}

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self._ctx.set_input_shape(self._in, x.shape)
            d_in = self._mem.alloc(x.nbytes, "in")
            self._ctx.set_tensor_address(self._in, d_in)
            outs = {}
            for name in self._outs:
                outs[name] = np.empty(tuple(self._ctx.get_tensor_shape(name)), np.float32)
                self._ctx.set_tensor_address(name, self._mem.alloc(outs[name].nbytes, name))
            self._mem.h2d(d_in, x)
            if not self._ctx.execute_async_v3(self._mem.stream_handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for name, arr in outs.items():
                self._mem.d2h(arr, self._mem.alloc(arr.nbytes, name))
            self._mem.sync()
        return outs

    def _release(self) -> None:
        """Device buffers and stream first, then context and engine (TensorRT's documented order)."""
        mem = getattr(self, "_mem", None)
        if mem is not None:
            mem.free()
        self._ctx = self._engine = None


EMBEDDED_KEYS = ("classes", "preprocess", "verification", "guard", "operating_point", "heatmap")


def make_runner(path: Path, engine: dict, **options) -> BaseRunner:
    """The registry's runner for ``engine['backend']``."""
    backend = get_backend(engine.get("backend", "?"))
    return backend.runner_class()(Path(path), engine, **options)
