"""Paired comparison of two `edgecxr eval` results on the same images: accuracy of each (image level), per-source
COVID-19 sensitivity, and the exact McNemar test on per-image correctness.

Run: python benchmarks/paired.py A/eval.json B/eval.json
"""
import json
import sys

import numpy as np

from edgecxr.metrics import mcnemar_exact


def load(path: str) -> tuple[dict, list[str]]:
    d = json.load(open(path))
    return {p["file"]: p for p in d["predictions"]}, d["classes"]


(a, classes), (b, _) = load(sys.argv[1]), load(sys.argv[2])
files = sorted(set(a) & set(b))
if len(files) != len(a) or len(files) != len(b):
    sys.exit(f"the two evaluations hold different images ({len(a)} vs {len(b)}, {len(files)} shared)")
y = np.array([classes.index(a[f]["label"]) for f in files])
ca = np.array([np.argmax(a[f]["prob"]) for f in files]) == y
cb = np.array([np.argmax(b[f]["prob"]) for f in files]) == y
print(f"n = {len(files)}: accuracy A {ca.mean():.3f}, B {cb.mean():.3f}")
k = classes.index("COVID-19")
for src in sorted({a[f]["source"] for f in files}):
    m = np.array([a[f]["source"] == src for f in files]) & (y == k)
    if m.any():
        print(f"  COVID-19 sensitivity {src}: A {int(ca[m].sum())}/{int(m.sum())}, B {int(cb[m].sum())}/{int(m.sum())}")
print("exact McNemar:", mcnemar_exact(ca, cb))
