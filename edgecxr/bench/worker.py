"""One benchmark measurement in its own process, so that peak memory and cold start belong to one engine.

Invoked by the harness as ``python -m edgecxr.bench.worker CONFIG.json``; prints one JSON line.
Config: ``kind`` ("artifact" or "torch"), ``path``, ``threads``, ``batch``, ``warmup``, ``iters``,
``min_seconds``, ``eval_npy`` (preprocessed labelled images), and for torch ``half``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


class TorchRunner:
    """The reference: PyTorch eager (FP32; FP16 autocast on CUDA when ``half``), same interface as the runners
    (named outputs: ``logits``, plus ``guard`` when the checkpoint carries a fitted guard)."""

    def __init__(self, checkpoint: str, threads: int | None = None, half: bool = False) -> None:
        import torch

        from edgecxr.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model, meta = load_model(checkpoint)
        self.outputs = ["logits"]
        if meta.get("guard"):
            from edgecxr.guard_torch import GuardedClassifier

            self.model = GuardedClassifier(self.model, meta["guard"]).eval()
            self.outputs = ["logits", "guard"]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.half = half and self.device.type == "cuda"
        self.max_batch = 1024
        self.info = {"engine": "pytorch", "version": torch.__version__, "precision": "fp16-amp" if self.half else "fp32",
                     "threads": torch.get_num_threads(), "device": self.device.type}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            out = self.model(torch.from_numpy(x).to(self.device))
        out = out if isinstance(out, tuple) else (out,)
        return {k: v.float().cpu().numpy() for k, v in zip(self.outputs, out)}

    def close(self) -> None:
        self.model = None


def _percentiles(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": int(len(a))}


def _timed(runner, x: np.ndarray, warmup: int, iters: int, min_seconds: float, power=None) -> list[float]:
    for _ in range(warmup):
        runner.run(x)
    times: list[float] = []
    start = time.perf_counter()
    if power:
        power.start()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t)
    if power:
        power.stop()
    return times


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the current address space; ru_maxrss can carry the
    parent's peak across fork+exec on Linux, so it is only the fallback."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg: dict) -> dict:
    t0 = time.perf_counter()
    if cfg["kind"] == "torch":
        runner = TorchRunner(cfg["path"], cfg.get("threads"), cfg.get("half", False))
    else:
        from edgecxr.runtime import load

        opts = {"threads": cfg.get("threads")} if cfg.get("threads") else {}
        # unverified artifacts are measured too; the harness marks their rows "unverified"
        runner = load(cfg["path"], allow_unverified=bool(cfg.get("allow_unverified")), **opts).runner
    load_s = time.perf_counter() - t0
    x_eval = np.load(cfg["eval_npy"])
    one = x_eval[:1]
    t = time.perf_counter()
    runner.run(one)
    first_ms = (time.perf_counter() - t) * 1000
    from edgecxr.bench.power import PowerSampler

    power = PowerSampler.create()
    res: dict = {"info": runner.info, "load_s": load_s, "first_inference_ms": first_ms}
    res["latency_b1"] = _percentiles(_timed(runner, one, cfg["warmup"], cfg["iters"], cfg["min_seconds"], power))
    if power and power.samples:
        res["power_w_mean"] = power.mean_watts()
        res["energy_mj_per_image"] = power.mean_watts() * res["latency_b1"]["mean_ms"]
    b = min(int(cfg["batch"]), getattr(runner, "max_batch", cfg["batch"]))
    xb = np.ascontiguousarray(np.resize(x_eval, (b,) + x_eval.shape[1:]))
    tb = _timed(runner, xb, max(1, cfg["warmup"] // 2), max(3, cfg["iters"] // 5), cfg["min_seconds"] / 2)
    res["throughput"] = {"batch": b, "images_per_s": b / float(np.median(tb)), "ms_per_image": float(np.median(tb)) / b * 1000}
    mode = getattr(runner, "throughput_mode", None)
    if mode is not None:
        tput = mode(xb, max(0.5, cfg["min_seconds"]))  # batch-b requests, as benchmark_app -b
        if tput:
            res["throughput_mode"] = tput
    from edgecxr.runtime.batching import run_batched

    outs = run_batched(runner, x_eval, batch=b)
    res["logits"] = outs["logits"].tolist()
    if "guard" in outs:
        res["guard"] = outs["guard"].reshape(-1).tolist()
    res["peak_rss_mb"] = _peak_rss_mb()
    if cfg["kind"] == "torch" and runner.device.type == "cuda":
        res["peak_gpu_mb"] = runner._torch.cuda.max_memory_allocated() / 2**20
    return res


def main() -> None:
    cfg = json.loads(open(sys.argv[1]).read())
    print(json.dumps(measure(cfg)))


if __name__ == "__main__":
    main()
