"""Batch throughput of one OpenVINO artifact in several execution modes (run with nothing else on the CPU).

  python benchmarks/throughput_probe.py MODEL.xml [--batch 8] [--seconds 4] [--rounds 2]

Modes, each compiled afresh from the IR: LATENCY hint with one synchronous batch (what the bench's "batch" column
times), THROUGHPUT hint with asynchronous batch-1 requests (the bench's "throughput mode" column, as benchmark_app
by default), THROUGHPUT hint with asynchronous batch-B requests, and explicit stream counts with batch-B requests.
Each mode's outputs on the same inputs are compared with the LATENCY mode's (argmax agreement, max |logit diff|):
a faster mode that computes something else is not a faster mode. Prints one line per mode and round.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _compile(core, path: str, cfg: dict):
    return core.compile_model(core.read_model(path), "CPU", cfg)


def _sync(compiled, x: np.ndarray, seconds: float) -> float:
    req = compiled.create_infer_request()
    for _ in range(3):
        req.infer({0: x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        req.infer({0: x})
        n += len(x)
    return n / (time.perf_counter() - t0)


def _logits(compiled, x: np.ndarray, b: int) -> np.ndarray:
    req = compiled.create_infer_request()
    out = []
    for i in range(0, len(x), b):
        chunk = x[i:i + b]
        req.infer({0: chunk})
        out.append(np.array(req.get_output_tensor(0).data, copy=True))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", default="calibration_data/eval", help="images for the agreement check")
    a = ap.parse_args()

    import openvino as ov

    from edgecxr.export.calib import load_images
    from edgecxr.runtime import load
    from edgecxr.runtime.runners import async_images_per_s

    with load(a.model, allow_unverified=True) as m:
        pre, classes = m.preprocess_config, m.classes
    x_eval, _, _ = load_images([Path(a.images)], pre, classes)
    x_eval = np.ascontiguousarray(x_eval, np.float32)
    xb = np.ascontiguousarray(np.resize(x_eval, (a.batch,) + x_eval.shape[1:]))
    one = xb[:1]
    core = ov.Core()
    print(f"openvino {ov.get_version()}; {a.model}; batch {a.batch}; {len(x_eval)} images for agreement")
    ref = _logits(_compile(core, a.model, {"PERFORMANCE_HINT": "LATENCY"}), x_eval, a.batch)
    modes = [("LATENCY sync b%d" % a.batch, {"PERFORMANCE_HINT": "LATENCY"}, "sync", xb),
             ("THROUGHPUT async b1", {"PERFORMANCE_HINT": "THROUGHPUT"}, "async", one),
             ("THROUGHPUT async b%d" % a.batch, {"PERFORMANCE_HINT": "THROUGHPUT"}, "async", xb)]
    for s in (1, 2):
        modes.append((f"{s} stream(s) async b{a.batch}", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": s}, "async", xb))
    for r in range(a.rounds):
        for name, cfg, kind, x in modes:
            compiled = _compile(core, a.model, cfg)
            if kind == "sync":
                ips, n_req = _sync(compiled, x, a.seconds), 1
            else:
                ips, n_req = async_images_per_s(compiled, x, a.seconds)
            got = _logits(compiled, x_eval, len(x))
            agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
            streams = compiled.get_property("NUM_STREAMS")
            print(f"round {r} {name:28s} streams {str(streams):>2s} requests {n_req:2d}: {ips:7.1f} img/s "
                  f"({1000 / ips:6.2f} ms/img); argmax agreement with LATENCY {agree:.3f}, "
                  f"max |dlogit| {np.abs(got - ref).max():.4f}", flush=True)
            del compiled


if __name__ == "__main__":
    main()
