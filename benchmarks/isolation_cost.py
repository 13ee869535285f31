"""What decoding in the worker process costs (``isolate_decoding="all"`` / ``predict --isolate-all``) against
decoding in-process, per image size and format. Synthetic radiograph-like images; medians of N interleaved runs.

  python benchmarks/isolation_cost.py [--n 15] [--out benchmarks/results/isolation-cost-<cpu>.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgecxr.hardware import cpu_info
from edgecxr.imaging import load_gray
from edgecxr.runtime.isolation import IsolatedDecoder


def _image(h: int, w: int, bits: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    body = np.exp(-(((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2))
    g = 0.15 + 0.7 * body + 0.05 * rng.standard_normal((h, w))
    top = (1 << bits) - 1
    return (np.clip(g, 0, 1) * top).astype(np.uint16 if bits > 8 else np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    cases = [("PNG 8-bit 1024x1024", (1024, 1024, 8), "png"), ("JPEG 8-bit 2048x2048", (2048, 2048, 8), "jpg"),
             ("PNG 16-bit 3000x2500", (3000, 2500, 16), "png")]
    iso = IsolatedDecoder(formats="all")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (h, w, bits), ext in cases:
            p = Path(tmp) / f"x.{ext}"
            Image.fromarray(_image(h, w, bits)).save(p, quality=90) if ext == "jpg" else Image.fromarray(_image(h, w, bits)).save(p)
            assert np.array_equal(iso.load_gray(p), load_gray(p))  # same pixels either way (also warms the worker)
            t_in, t_iso = [], []
            for _ in range(a.n):
                t0 = time.perf_counter()
                load_gray(p)
                t_in.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                iso.load_gray(p)
                t_iso.append(time.perf_counter() - t0)
            mi, ms = 1000 * float(np.median(t_in)), 1000 * float(np.median(t_iso))
            rows.append(f"| {label} | {p.stat().st_size / 1e6:.1f} MB | {mi:.1f} | {ms:.1f} | +{ms - mi:.1f} |")
    iso.close()
    cpu = cpu_info()
    head = [f"# python benchmarks/isolation_cost.py --n {a.n}", "",
            f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; CPU {cpu.get('model', '?')}, ISA "
            f"{', '.join(cpu.get('isa', [])) or '?'}; medians of {a.n} interleaved runs; the decoded image is float32 "
            "(4 bytes per pixel); over 1 MiB it comes back through the worker's shared-memory block, else through the pipe", "",
            "| image | file | in-process ms | worker ms | cost of isolation ms |", "|---|---|---|---|---|"]
    text = "\n".join(head + rows) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
