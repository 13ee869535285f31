"""``edgecxr bench``: export every target (cached), measure each in its own process, report one table.

Each row has a status: ``ok``, ``export failed`` (with the reason) or ``skipped`` (with the reason).
The reference is PyTorch eager FP32 (plus FP16 autocast on CUDA); speed-ups and agreement are
relative to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecxr.errors import BackendUnavailable, EdgeCXRError
from edgecxr.sidecar import REWRITES

DEFAULT_TARGETS = ["torch-fp32", "torch-fp16", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-fp16",
                   "openvino-int8", "tensorrt-fp16", "tensorrt-int8"]


@dataclass
class BenchConfig:
    checkpoint: Path
    data: list[Path]
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    batch: int = 8
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 2.0
    threads: int | None = None
    out: Path = Path("bench-results")
    export_root: Path | None = None
    rounds: int = 3  # timing rounds over all rows, interleaved; each row reports its median round


def _run_worker(wcfg: dict, timeout: float = 1800) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(wcfg, fh)
    try:
        r = subprocess.run([sys.executable, "-m", "edgecxr.bench.worker", fh.name], capture_output=True, text=True,
                           timeout=timeout)
    finally:
        os.unlink(fh.name)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"measurement failed: {tail[0]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _accuracy(logits: np.ndarray, y: np.ndarray, classes: list[str], ref_pred: np.ndarray | None) -> dict:
    from edgecxr.metrics import agreement, point_metrics

    from edgecxr.runtime.batching import softmax

    m = point_metrics(y, softmax(logits), classes)
    covid = next((c for c in classes if c.lower().startswith("covid")), None)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "macro_auc": m["macro_auc"],
            "covid_sensitivity": m["per_class"][covid]["sensitivity"] if covid else float("nan"),
            "agreement": agreement(ref_pred, logits.argmax(1)) if ref_pred is not None else 1.0}


def run_bench(cfg: BenchConfig, progress=None) -> dict:
    """Run every target; return ``{"machine": ..., "config": ..., "rows": [...]}``."""
    from edgecxr.artifact import sha256_file
    from edgecxr.checkpoint import read_meta
    from edgecxr.export.core import export
    from edgecxr.hardware import ONEDNN_BACKENDS, machine_report, onednn_cap
    from edgecxr.preprocess import PreprocessConfig
    from edgecxr.backends import backend_available

    capped = onednn_cap() is not None

    meta = read_meta(cfg.checkpoint)
    classes = meta["classes"]
    from edgecxr.export.calib import load_images

    x, y, _ = load_images(cfg.data, PreprocessConfig.from_dict(meta["preprocess"]), classes)
    cfg.out.mkdir(parents=True, exist_ok=True)
    npy = cfg.out / ".eval-inputs.npy"
    np.save(npy, x)
    base = {"path": str(cfg.checkpoint), "threads": cfg.threads, "batch": cfg.batch, "warmup": cfg.warmup,
            "iters": cfg.iters, "min_seconds": cfg.min_seconds, "eval_npy": str(npy)}
    has_cuda = _torch_cuda()
    rows: list[dict] = []
    jobs: list[tuple[dict, dict]] = []  # (row, worker config) of every measured row, for the extra rounds
    ref_pred = None
    for name in cfg.targets:
        row: dict = {"target": name, "status": "ok"}
        if progress:
            progress(name)
        t0 = time.perf_counter()
        try:
            if name.startswith("torch-"):
                if name == "torch-fp16" and not has_cuda:
                    rows.append(dict(row, status="skipped", reason="FP16 eager needs a CUDA GPU"))
                    continue
                row.update(backend="pytorch", precision=name.split("-")[1], artifact_mb=cfg.checkpoint.stat().st_size / 2**20)
                wcfg = dict(base, kind="torch", half=name == "torch-fp16")
                res = _run_worker(wcfg)
                jobs.append((row, wcfg))
            else:
                from edgecxr.export.targets import load_target

                tgt = load_target(name)
                ok, why = backend_available(tgt.backend)
                if ok and capped and tgt.backend not in ONEDNN_BACKENDS:
                    ok, why = False, (f"ONEDNN_MAX_CPU_ISA caps OpenVINO and torch only; {tgt.backend} would run this "
                                      "CPU's native kernels, so its row would not be the capped ISA's: measure it on such a CPU")
                if not ok:
                    rows.append(dict(row, backend=tgt.backend, precision=tgt.precision, status="skipped", reason=why))
                    continue
                try:
                    out = (cfg.export_root / f"{cfg.checkpoint.stem}-{sha256_file(cfg.checkpoint)[:8]}" / tgt.name
                           if cfg.export_root else None)
                    ex = export(cfg.checkpoint, tgt, out=out, step=progress)
                except (EdgeCXRError, BackendUnavailable, RuntimeError, ValueError) as exc:
                    rows.append(dict(row, backend=tgt.backend, precision=tgt.precision, status="export failed",
                                     reason=str(exc).splitlines()[0][:200]))
                    continue
                side = ex.sidecar
                row.update(backend=tgt.backend, precision=tgt.precision, artifact=str(ex.artifact),
                           artifact_mb=side.total_bytes / 2**20, export_s=side.export_seconds, export_cached=ex.cached,
                           verification=side.verification.verdict,
                           float_nodes=(side.engine.get("int8") or {}).get("float_nodes"),
                           rewrites=[k for k in REWRITES if side.engine.get(k)] or None)
                if not ex.verified:
                    row["status"] = "unverified"
                    row["reason"] = "; ".join(side.verification.reasons) or "verification skipped"
                wcfg = dict(base, kind="artifact", path=str(ex.artifact), allow_unverified=not ex.verified)
                res = _run_worker(wcfg)
                jobs.append((row, wcfg))
        except Exception as exc:  # a measurement that crashed is a row, not the end of the run
            rows.append(dict(row, status="failed", reason=str(exc)[:200]))
            continue
        logits = np.asarray(res.pop("logits"), np.float64)
        guard_scores = res.pop("guard", None)
        if guard_scores is not None and meta.get("guard"):
            row["guard_rejected_share"] = float(np.mean(np.asarray(guard_scores) > meta["guard"]["threshold"]))
        if name == "torch-fp32":
            ref_pred = logits.argmax(1)
        row.update(res)
        row.update(_accuracy(logits, y, classes, ref_pred))
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
    _more_rounds(jobs, cfg.rounds, progress)
    npy.unlink(missing_ok=True)
    add_speedups(rows)
    return {"machine": machine_report(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checkpoint": {"file": str(cfg.checkpoint), "sha256": sha256_file(cfg.checkpoint), "arch": meta["arch"]},
            "data": {"folders": [str(d) for d in cfg.data], "images": int(len(y))},
            "config": {"batch": cfg.batch, "warmup": cfg.warmup, "iters": cfg.iters, "min_seconds": cfg.min_seconds,
                       "threads": cfg.threads or "engine default", "rounds": cfg.rounds},
            "rows": rows}


def add_speedups(rows: list[dict]) -> None:
    """Speed-ups of every measured row over torch-fp32 eager: batch 1, batch, and the row's best batch throughput
    (its throughput mode counts only where its outputs matched the latency model's argmax)."""
    ref = next((r for r in rows if r["target"] == "torch-fp32" and r["status"] == "ok"), None)
    for r in rows:
        if ref and "latency_b1" in r:
            r["speedup_b1"] = ref["latency_b1"]["p50_ms"] / r["latency_b1"]["p50_ms"]
            r["speedup_batch"] = ref["throughput"]["ms_per_image"] / r["throughput"]["ms_per_image"]
            mode = r.get("throughput_mode") or {}
            trusted = mode.get("argmax_agreement_vs_latency", 1.0) == 1.0
            if mode and not trusted:
                r["throughput_mode_note"] = "not counted: its outputs differ from the latency model's"
            best = max(r["throughput"]["images_per_s"], mode.get("images_per_s", 0) if trusted else 0)
            r["speedup_throughput"] = best / ref["throughput"]["images_per_s"]
            paired = _paired(ref, r)
            if paired:
                r["speedup_paired"] = paired


def _paired(ref: dict, row: dict) -> dict | None:
    """Speed-ups over eager taken round by round (each round's ratio, then the median over rounds): a host that
    slows for minutes slows both rows of a round more often than the medians of two separate rows show."""
    a, b = ref["latency_b1"].get("p50_ms_rounds"), row["latency_b1"].get("p50_ms_rounds")
    c, d = ref["throughput"].get("ms_per_image_rounds"), row["throughput"].get("ms_per_image_rounds")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    out = {"b1": float(np.median([x / y for x, y in zip(a, b)]))}
    if c and d and len(c) == len(d) == len(a):
        out["batch"] = float(np.median([x / y for x, y in zip(c, d)]))
    return out


def _more_rounds(jobs: list[tuple[dict, dict]], rounds: int, progress=None) -> None:
    """Time every measured row ``rounds - 1`` more times, rows interleaved, and keep each timing's median over the
    rounds: a shared or throttling machine slows whole minutes, so one pass can flatter or punish one row."""
    if rounds <= 1 or not jobs:
        return
    got: dict[int, list[dict]] = {id(row): [row] for row, _ in jobs}
    for k in range(rounds - 1):
        for row, wcfg in jobs:
            if progress:
                progress(f"{row['target']} (round {k + 2}/{rounds})")
            try:
                got[id(row)].append(_run_worker(wcfg))
            except Exception:  # noqa: BLE001 - a failed extra round leaves the first round's numbers
                pass
    for row, _ in jobs:
        res = got[id(row)]
        row["rounds"] = len(res)
        p50s = [r["latency_b1"]["p50_ms"] for r in res]
        mid = res[int(np.argsort(p50s)[len(p50s) // 2])]  # the round with the median batch-1 p50, whole
        row["latency_b1"] = mid["latency_b1"]
        row["latency_b1"]["p50_ms_rounds"] = p50s
        ms = [r["throughput"]["ms_per_image"] for r in res]  # in round order, like p50_ms_rounds
        mid_ms = sorted(ms)[len(ms) // 2]
        row["throughput"] = dict(row["throughput"], ms_per_image=mid_ms, images_per_s=1000 / mid_ms,
                                 ms_per_image_rounds=ms)
        modes = [r["throughput_mode"]["images_per_s"] for r in res if r.get("throughput_mode")]
        if modes:
            row["throughput_mode"] = dict(row["throughput_mode"], images_per_s=sorted(modes)[len(modes) // 2],
                                          images_per_s_rounds=sorted(modes))


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
