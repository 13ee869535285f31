"""Why is Q/DQ INT8 slow in ONNX Runtime on CPU for DenseNet? Time FP32, QOperator and Q/DQ at batch 1 and
count the nodes ORT leaves in float after its graph optimisations.

Usage: python benchmarks/ort_int8_probe.py FP32.onnx CALIB_DIR [--threads N]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecxr.export.calib import load_images
from edgecxr.export.onnx_int8 import quantize_onnx
from edgecxr.preprocess import PreprocessConfig


def session(path: Path, threads: int, optimized_out: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_out:
        so.optimized_model_filepath = str(optimized_out)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def p50(sess: ort.InferenceSession, x: np.ndarray, n: int = 30) -> float:
    for _ in range(5):
        sess.run(None, {"input": x})
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32")
    ap.add_argument("calib")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-calib", type=int, default=60)
    a = ap.parse_args()
    x, _, _ = load_images([Path(a.calib)], PreprocessConfig())
    x = x[:: max(1, len(x) // a.n_calib)]
    one = x[:1]
    td = Path(tempfile.mkdtemp())
    variants = {"fp32": Path(a.fp32)}
    for name, kw in {"qoperator-u8s8": dict(fmt="qoperator"), "qoperator-u8s8-reduce-range": dict(fmt="qoperator", reduce_range=True),
                     "qdq-s8s8-symmetric": dict(fmt="qdq"),
                     "qoperator-bn-as-dwconv": dict(fmt="qoperator", bn_to_conv=True),
                     "qoperator-bn-as-dwconv-reduce-range": dict(fmt="qoperator", bn_to_conv=True, reduce_range=True)}.items():
        variants[name] = quantize_onnx(Path(a.fp32), td / f"{name}.onnx", x, **kw)
    ref = None
    for name, path in variants.items():
        opt = td / f"{name}.opt.onnx"
        s = session(path, a.threads, opt)
        out = s.run(None, {"input": x})[0] if False else np.concatenate([s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        ref = out if ref is None else ref
        import onnx

        ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
        top = ", ".join(f"{k} {v}" for k, v in ops.most_common(8))
        print(f"{name:30s} p50 {p50(s, one):7.2f} ms  agreement {np.mean(out.argmax(1) == ref.argmax(1)):.3f}  "
              f"optimised graph: {top}")


if __name__ == "__main__":
    main()
