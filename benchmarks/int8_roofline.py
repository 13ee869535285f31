"""How fast can INT8 be on this CPU? The model's multiply-accumulates against the throughput this CPU reaches.

    python benchmarks/int8_roofline.py [CHECKPOINT] [--threads N] [--out FILE.md]

Issue 10 asks the best verified INT8 artifact for >= 5x torch eager at batch 1 and >= 8x at batch 8. This asks
whether any INT8 engine could, before more tuning is spent on it:

1. MACs: the model's multiply-accumulates per image (torch's ``FlopCounterMode``), and the share in convolutions.
2. Eager: the bench's reference (torch eager FP32, the same loader and threads) at batch 1 and 8, and the MAC rate
   that is.
3. INT8 ceiling: the best MAC rate OpenVINO's CPU plugin (the engine of the fastest INT8 row) reaches on single
   convolutions with u8 activations and i8 weights (a FakeQuantize -> Convolution graph, which its low-precision
   transformations run as an int8 kernel), over a few large shapes and DenseNet's own; the same graphs in f32 for
   comparison. Convolutions this large run closer to the CPU's peak than any whole network does.
4. Bound: MACs / INT8 ceiling is a floor on INT8 latency; eager ms over that floor is the largest speed-up an INT8
   engine could show here. If it is below a goal, the goal cannot be met on this CPU with this model.

Timings alternate eager and OpenVINO in rounds (this host has slow phases); nothing else should run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np

# (name, batch, c_in, c_out, kernel, spatial): large shapes, then DenseNet121's own (1x1 bottleneck, 3x3 growth)
SHAPES = [
    ("1x1 512->512 @28, b8", 8, 512, 512, 1, 28),
    ("3x3 256->256 @28, b8", 8, 256, 256, 3, 28),
    ("3x3 512->512 @14, b8", 8, 512, 512, 3, 14),
    ("3x3 128->128 @56, b8", 8, 128, 128, 3, 56),
    ("1x1 256->256 @56, b1", 1, 256, 256, 1, 56),
    ("densenet 1x1 256->128 @56, b1", 1, 256, 128, 1, 56),
    ("densenet 3x3 128->32 @56, b1", 1, 128, 32, 3, 56),
    ("densenet 1x1 512->128 @28, b8", 8, 512, 128, 1, 28),
]


def count_macs(model, size: int) -> tuple[float, float]:
    """(all MACs, convolution MACs) per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size))
    counts = fc.get_flop_counts()["Global"]
    conv = sum(v for k, v in counts.items() if "convolution" in str(k))
    return sum(counts.values()) / 2, conv / 2


def _median_ms(fn, min_s: float = 1.0, min_n: int = 10) -> float:
    fn()
    fn()
    ts, t0 = [], time.perf_counter()
    while len(ts) < min_n or time.perf_counter() - t0 < min_s:
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1000


def conv_graph(batch: int, cin: int, cout: int, k: int, hw: int, int8: bool):
    """One convolution as an OpenVINO model; with ``int8`` its input and weights pass FakeQuantize (u8 / i8)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([batch, cin, hw, hw], np.float32, name="x")
    w = ops.constant(rng.uniform(-1, 1, (cout, cin, k, k)).astype(np.float32))
    src = x
    if int8:
        c = lambda v: ops.constant(np.float32(v))  # noqa: E731
        src = ops.fake_quantize(x, c(0), c(4), c(0), c(4), 256)
        w = ops.fake_quantize(w, c(-1), c(1), c(-1), c(1), 255)
    pad = [k // 2, k // 2]
    y = ops.convolution(src, w, [1, 1], pad, pad, [1, 1])
    return ov.Model([y], [x], "conv"), rng.uniform(0, 4, (batch, cin, hw, hw)).astype(np.float32)


def conv_rate(core, shape, int8: bool, threads: int) -> tuple[float, str]:
    """(GMAC/s, kernel name) of one convolution shape: the convolution node's own time (performance counters), so
    quantizing the f32 input and writing the f32 output, which a whole int8 network fuses away, do not count."""
    _, batch, cin, cout, k, hw = shape
    model, x = conv_graph(batch, cin, cout, k, hw, int8)
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
           "PERF_COUNT": True}
    compiled = core.compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    ts, kernel, t0 = [], "?", time.perf_counter()
    for i in range(1000):
        req.infer({0: x})
        conv = [p for p in req.profiling_info if p.node_type == "Convolution" and p.status == p.Status.EXECUTED]
        if i >= 2 and conv:
            ts.append(sum(p.real_time.total_seconds() for p in conv))
            kernel = conv[0].exec_type
        if len(ts) >= 10 and time.perf_counter() - t0 > 0.5:
            break
    return batch * cout * cin * k * k * hw * hw / float(np.median(ts)) / 1e9, kernel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", default="edgecxr/weights/covid-densenet-cxr3.safetensors")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores (the bench's default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import openvino as ov
    import torch

    from edgecxr.checkpoint import load_model
    from edgecxr.hardware import cpu_info

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, meta = load_model(Path(args.checkpoint))
    size = int(meta.get("preprocess", {}).get("size", 224))
    macs, conv_macs = count_macs(model, size)
    core = ov.Core()

    eager = {1: [], 8: []}
    rates: dict[tuple[str, bool], list[float]] = {}
    kernels: dict[tuple[str, bool], str] = {}
    for _ in range(args.rounds):
        for b in eager:
            x = torch.rand(b, 3, size, size)
            with torch.inference_mode():
                eager[b].append(_median_ms(lambda: model(x), min_s=2.0, min_n=5) / b)
        for shape in SHAPES:
            for int8 in (True, False):
                r, kern = conv_rate(core, shape, int8, threads)
                rates.setdefault((shape[0], int8), []).append(r)
                kernels[(shape[0], int8)] = kern

    best = {k: max(v) for k, v in rates.items()}
    peak8 = max(v for (n, i8), v in best.items() if i8)
    peak32 = max(v for (n, i8), v in best.items() if not i8)
    e1, e8 = (float(np.median(eager[b])) for b in (1, 8))
    floor_ms = macs / peak8 / 1e9 * 1000
    info = cpu_info()
    lines = [
        f"# python benchmarks/int8_roofline.py {args.checkpoint} (threads {threads}; {info.get('model', '?')}, "
        f"ISA {', '.join(info.get('isa', [])) or '?'}; OpenVINO {ov.__version__}, torch {torch.__version__}; "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}; {args.rounds} rounds, best / median)",
        "",
        f"Model: {meta.get('arch')} at {size} px: **{macs / 1e9:.2f} GMAC per image**, "
        f"{100 * conv_macs / macs:.1f}% of them in convolutions (counted: convolutions and matrix products).",
        "",
        "| convolution (OpenVINO CPU plugin, the node's own time) | int8 GMAC/s (kernel) | f32 GMAC/s (kernel) | int8 / f32 |",
        "|---|---|---|---|",
    ]
    for shape in SHAPES:
        n = shape[0]
        lines.append(f"| {n} | {best[(n, True)]:.0f} ({kernels[(n, True)]}) | {best[(n, False)]:.0f} "
                     f"({kernels[(n, False)]}) | {best[(n, True)] / best[(n, False)]:.1f} |")
    lines += [
        "",
        f"- INT8 ceiling (best single convolution): **{peak8:.0f} GMAC/s**; f32: {peak32:.0f} GMAC/s.",
        f"- torch eager FP32 (the bench's reference): {e1:.1f} ms at batch 1 ({macs / e1 / 1e6:.0f} GMAC/s), "
        f"{e8:.1f} ms per image at batch 8 ({macs / e8 / 1e6:.0f} GMAC/s); per round "
        f"{', '.join(f'{v:.1f}' for v in eager[1])} / {', '.join(f'{v:.1f}' for v in eager[8])}.",
        f"- Floor on INT8 latency, every MAC at the ceiling: **{floor_ms:.1f} ms per image**, so at most "
        f"**{e1 / floor_ms:.1f}x** eager at batch 1 and **{e8 / floor_ms:.1f}x** at batch 8 (issue 10 asks 5x and 8x: "
        f"the ceiling {'allows' if e1 / floor_ms >= 5 else 'rules out'} 5x at batch 1 and "
        f"{'allows' if e8 / floor_ms >= 8 else 'rules out'} 8x at batch 8).",
        f"- Needed for the goals: {e1 / 5:.1f} ms at batch 1 = {macs / (e1 / 5) / 1e6:.0f} GMAC/s "
        f"({100 * macs / (e1 / 5) / 1e6 / peak8:.0f}% of the ceiling over the whole network); {e8 / 8:.1f} ms per image "
        f"at batch 8 = {macs / (e8 / 8) / 1e6:.0f} GMAC/s ({100 * macs / (e8 / 8) / 1e6 / peak8:.0f}%).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
