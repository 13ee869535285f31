"""What the extra graph outputs cost: batch-1 ONNX Runtime latency of the shipped model exported with
logits only, with the guard score, and with guard + heatmap maps (the shipped form).

Run: python benchmarks/output_overhead.py [CHECKPOINT]   (prints a Markdown table; state the CPU's ISA beside it)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROUNDS = 5


def main() -> None:
    import onnxruntime as ort

    from edgecxr.checkpoint import load_model
    from edgecxr.export.onnx_fp32 import export_onnx
    from edgecxr.guard_torch import ExportModule
    from edgecxr.hardware import cpu_info
    from edgecxr.resources import default_checkpoint

    ck = Path(sys.argv[1]) if len(sys.argv) > 1 else default_checkpoint()
    model, meta = load_model(ck)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sessions = []
    with tempfile.TemporaryDirectory() as td:
        for label, guard, maps in (("logits only", None, False), ("+ guard", meta.get("guard"), False),
                                   ("+ guard + heatmap maps (shipped)", meta.get("guard"), True)):
            mod = ExportModule(model, guard, maps=maps).eval()
            path = Path(td) / f"m{len(sessions)}.onnx"
            export_onnx(mod, path, size=224, output_names=mod.output_names)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            for _ in range(10):
                sess.run(None, {"input": x})
            sessions.append((label, sess))
        # interleaved rounds: a slow phase of the host hits every variant alike, not one of them
        rounds: dict[str, list[float]] = {label: [] for label, _ in sessions}
        for _ in range(ROUNDS):
            for label, sess in sessions:
                ts = []
                for _ in range(30):
                    t = time.perf_counter()
                    sess.run(None, {"input": x})
                    ts.append(time.perf_counter() - t)
                rounds[label].append(1000 * statistics.median(ts))
    rows = [(label, statistics.median(r)) for label, r in rounds.items()]
    base = rows[0][1]
    print(f"CPU: {cpu_info()['model']}, ISA: {', '.join(cpu_info()['isa'])}")
    print(f"| outputs | p50 ms, batch 1, ORT FP32, 2 threads (median of {ROUNDS} interleaved rounds) | rounds | vs logits only |")
    print("|---|---|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} | {', '.join(f'{v:.1f}' for v in rounds[label])} | {100 * (ms / base - 1):+.1f}% |")


if __name__ == "__main__":
    main()
