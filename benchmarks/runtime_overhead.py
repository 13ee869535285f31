"""Runtime overhead vs calling the engine directly, batch 1, plus import and first-prediction times.

Usage: python benchmarks/runtime_overhead.py ARTIFACT.onnx [--n 200] [--threads N]
Prints JSON. (A benchmark, not a test: timings depend on the machine and its load.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    code = "import time; t=time.perf_counter(); import edgecxr.runtime; print(time.perf_counter()-t)"
    imports = sorted(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout) for _ in range(5))

    from edgecxr.resources import eval_dir

    img = sorted(eval_dir().rglob("*.png"))[0]
    code = ("import time; t=time.perf_counter(); from edgecxr.runtime import load; "
            f"m=load({a.artifact!r}); t1=time.perf_counter(); m.predict({str(img)!r}); t2=time.perf_counter(); "
            "print(t1-t, t2-t1)")
    load_s, first_s = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split())

    from edgecxr.imaging import read_image
    from edgecxr.runtime import load

    model = load(a.artifact, threads=a.threads)
    sess = model.runner._sess
    name = sess.get_inputs()[0].name
    x = model._prepare(img)[None]

    def timeit(fn) -> float:
        for _ in range(20):
            fn()
        ts = []
        for _ in range(a.n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts) * 1000)

    # interleave to share any drift in machine load
    direct, runtime, full, prep = [], [], [], []
    for _ in range(3):
        direct.append(timeit(lambda: sess.run(None, {name: x})))
        runtime.append(timeit(lambda: model.predict_preprocessed(x)))
        full.append(timeit(lambda: model.predict(img)))
        prep.append(timeit(lambda: model._prepare(read_image(img))))
    d, r = min(direct), min(runtime)
    print(json.dumps({
        "artifact": a.artifact, "import_s_median": imports[2], "load_s": load_s, "first_prediction_s": first_s,
        "engine_direct_ms": d, "runtime_predict_preprocessed_ms": r, "overhead_pct": 100 * (r - d) / d,
        "predict_from_file_ms": min(full), "read_and_preprocess_ms": min(prep),
    }, indent=2))


if __name__ == "__main__":
    main()
