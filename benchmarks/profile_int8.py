"""Where the INT8 time goes: per-layer timings of an exported artifact, top N layers.

    python benchmarks/profile_int8.py exports/<model>/openvino-int8/model.xml [--top 12] [--runs 20]
    python benchmarks/profile_int8.py exports/<model>/onnx-int8/model.onnx
    python benchmarks/profile_int8.py MODEL.xml --batch 8 --precision bf16   # OpenVINO: static batch 8, bf16 float parts

OpenVINO: the CPU plugin's performance counters (``PERF_COUNT``), summed over ``--runs`` batch-1
inferences, with the kernel each layer ran (e.g. ``jit_avx512_amx_I8``, ``brgconv_avx512_core_vnni``).
ONNX Runtime: its built-in profiler (``SessionOptions.enable_profiling``), node events summed by node; the session
turns off the graph rewrites the sidecar names, as the runner does (INT8: float layers stay float).
Prints a markdown table (layer, type, kernel, ms per image, share of the total).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _input(shape) -> np.ndarray:
    dims = [1 if not isinstance(d, int) or d <= 0 else d for d in shape]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def profile_openvino(path: Path, runs: int, threads: int | None, batch: int = 1,
                     precision: str | None = None) -> list[tuple]:
    import openvino as ov

    core = ov.Core()
    cfg = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    model = core.read_model(str(path))
    shape = [d.get_length() if d.is_static else 1 for d in model.inputs[0].get_partial_shape()]
    shape[0] = batch
    model.reshape({model.inputs[0].get_any_name(): shape})  # static shape, as the runtime compiles per batch size
    compiled = core.compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    x = _input(shape)
    req.infer({0: x})
    total = collections.defaultdict(float)
    kind = {}
    for _ in range(runs):
        req.infer({0: x})
        for p in req.profiling_info:
            if p.status == p.Status.EXECUTED:
                total[p.node_name] += p.real_time.total_seconds() * 1000
                kind[p.node_name] = (p.node_type, p.exec_type)
    return [(n, *kind[n], t / runs / batch) for n, t in total.items()]


def profile_onnxruntime(path: Path, runs: int, threads: int | None) -> list[tuple]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    if threads:
        so.intra_op_num_threads = threads
    from edgecxr.runtime.runners import onnx_session_kwargs
    from edgecxr.sidecar import read_sidecar, sidecar_path

    engine = read_sidecar(path).engine if sidecar_path(path).exists() else {}  # as the runner loads it
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], **onnx_session_kwargs(engine))
    inp = sess.get_inputs()[0]
    x = _input(inp.shape)
    sess.run(None, {inp.name: x})
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    total = collections.defaultdict(float)
    kind = {}
    for ev in trace:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            node = ev["name"][: -len("_kernel_time")]
            total[node] += ev["dur"] / 1000
            kind[node] = (ev["args"].get("op_name", ""), ev["args"].get("provider", ""))
    return [(n, *kind[n], t / (runs + 1)) for n, t in total.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1, help="OpenVINO only: static batch size (ms are per image)")
    ap.add_argument("--precision", default=None, help="OpenVINO only: INFERENCE_PRECISION_HINT (f32, bf16)")
    a = ap.parse_args()
    if a.artifact.suffix == ".xml":
        rows = profile_openvino(a.artifact, a.runs, a.threads, a.batch, a.precision)
    else:
        rows = profile_onnxruntime(a.artifact, a.runs, a.threads)
    rows.sort(key=lambda r: -r[3])
    tot = sum(r[3] for r in rows)
    by_type = collections.defaultdict(float)
    for r in rows:
        by_type[f"{r[1]} ({r[2]})"] += r[3]
    print(f"{a.artifact}: {tot:.2f} ms per image at batch {a.batch} summed over {len(rows)} executed layers\n")
    print("| layer | type | kernel | ms | share |\n|---|---|---|---|---|")
    for n, t, k, ms in rows[: a.top]:
        print(f"| {n} | {t} | {k} | {ms:.3f} | {ms / tot:.1%} |")
    print("\n| layer type (kernel) | ms | share |\n|---|---|---|")
    for t, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {t} | {ms:.3f} | {ms / tot:.1%} |")


if __name__ == "__main__":
    main()
