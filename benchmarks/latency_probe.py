"""Two latency probes behind numbers in README's Results (run with nothing else on the CPU).

  python benchmarks/latency_probe.py ARTIFACT            # drift: medians of 10 consecutive batch-1 runs, 150 runs,
                                                          # through the runtime (shows an engine switching speed mid-process)
  python benchmarks/latency_probe.py MODEL.xml --static   # OpenVINO: dynamic vs static-shape compile, batch 1 and 8
  python benchmarks/latency_probe.py --ab A.xml B.xml:f32 ...  # several artifacts interleaved, batch 1, 6 rounds: OpenVINO
                                                                # IRs (static shape; ":f32"/":bf16" sets the float parts'
                                                                # precision), ONNX models (ONNX Runtime, CPU, all cores) and
                                                                # checkpoints (.safetensors: torch eager FP32, the bench's
                                                                # reference); each round's ratio to the first is printed
                                                                # (--rounds 6 and --n 40 runs per artifact and round)
"""
import time
from pathlib import Path

import numpy as np


def drift(path: str, n: int = 150) -> None:
    from edgecxr.runtime import load

    with load(path) as m:
        s = m.preprocess_config.size
        x = np.random.default_rng(0).random((1, 3, s, s), dtype=np.float32)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            m.runner.run(x)
            t.append((time.perf_counter() - t0) * 1000)
    t = np.array(t)
    print("ms per 10 runs:", " ".join(f"{np.median(t[i:i + 10]):.0f}" for i in range(0, n, 10)))


def static_ab(path: str) -> None:
    import openvino as ov

    core = ov.Core()

    def per_image(static: bool, b: int, n: int) -> float:
        m = core.read_model(path)
        dims = m.inputs[0].get_partial_shape()
        size = [dims[i].get_length() for i in range(1, dims.rank.get_length())]
        if static:
            m.reshape({m.inputs[0].get_any_name(): [b] + size})
        req = core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        x = np.random.default_rng(0).random([b] + size, dtype=np.float32)
        for _ in range(10):
            req.infer({0: x})
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            req.infer({0: x})
            t.append(time.perf_counter() - t0)
        return float(np.median(t)) * 1000 / b

    for rep in range(2):
        for b, n in ((1, 60), (8, 15)):
            print(f"round {rep} batch {b}: dynamic {per_image(False, b, n):.2f} ms/img, static {per_image(True, b, n):.2f} ms/img")


def _batch1(spec: str):
    """A callable that runs one batch-1 input through the artifact named by ``spec`` (see the module docstring)."""
    path, _, prec = spec.partition(":")
    if path.endswith(".safetensors"):  # torch eager FP32 from a checkpoint: the bench's reference, as it runs it
        from edgecxr.bench.worker import TorchRunner
        from edgecxr.checkpoint import read_meta

        runner = TorchRunner(path)
        size = int(read_meta(Path(path))["preprocess"]["size"])
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        return lambda: runner.run(x)
    if path.endswith(".onnx"):
        import onnxruntime as ort

        from edgecxr.runtime.runners import onnx_session_kwargs
        from edgecxr.sidecar import read_sidecar, sidecar_path

        engine = read_sidecar(Path(path)).engine if sidecar_path(Path(path)).exists() else {}
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"], **onnx_session_kwargs(engine))
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random([1] + list(inp.shape[1:]), dtype=np.float32)
        return lambda: sess.run(None, {inp.name: x})
    import openvino as ov

    core = ov.Core()
    m = core.read_model(path)
    m.reshape({m.inputs[0].get_any_name(): [1] + [d.get_length() for d in list(m.inputs[0].get_partial_shape())[1:]]})
    cfg = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_PRECISION_HINT": prec} if prec else {})}
    req = core.compile_model(m, "CPU", cfg).create_infer_request()
    x = np.random.default_rng(0).random(list(req.model_inputs[0].shape), dtype=np.float32)
    return lambda: req.infer({0: x})


def interleaved(specs: list[str], rounds: int = 6, n: int = 40) -> None:
    """Median batch-1 ms of each artifact per round, the artifacts taking turns, so a host phase hits all of them."""
    runs = {spec: _batch1(spec) for spec in specs}
    for run in runs.values():
        for _ in range(20):
            run()
    ms = {s: [] for s in runs}
    for _ in range(rounds):
        for spec, run in runs.items():
            t = []
            for _ in range(n):
                t0 = time.perf_counter()
                run()
                t.append(time.perf_counter() - t0)
            ms[spec].append(float(np.median(t)) * 1000)
    first = next(iter(ms))
    for spec, v in ms.items():
        line = f"{spec}: median {np.median(v):.2f} ms; rounds " + " ".join(f"{a:.2f}" for a in v)
        if spec != first:  # the same round's ratio: both timed within seconds, so in the same host phase
            r = np.asarray(ms[first]) / np.asarray(v)
            line += f"; {Path(first).name} / this per round " + " ".join(f"{a:.2f}" for a in r) + f" (median {np.median(r):.2f})"
        print(line)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--ab", action="store_true", help="several artifacts interleaved at batch 1")
    ap.add_argument("--static", action="store_true", help="OpenVINO: dynamic vs static-shape compile")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=40, help="runs per artifact and round (--ab)")
    a = ap.parse_args()
    if a.ab:
        interleaved(a.artifacts, rounds=a.rounds, n=a.n)
    else:
        static_ab(a.artifacts[0]) if a.static else drift(a.artifacts[0])
