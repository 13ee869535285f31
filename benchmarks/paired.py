"""Paired comparison of two `edgecxr eval` results on the same images: accuracy of each (image level), per-source
sensitivity of each class, and the exact McNemar test on per-image correctness.

Run: python benchmarks/paired.py A/eval.json B/eval.json [--without sbu]
(--without leaves a source's images out of the comparison, e.g. to compare on the images of the sources both models
were trained on.)
"""
import argparse
import json
import sys

import numpy as np

from edgecxr.metrics import mcnemar_exact


def load(path: str) -> tuple[dict, list[str]]:
    d = json.load(open(path))
    return {p["file"]: p for p in d["predictions"]}, d["classes"]


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--without", action="append", default=[], metavar="SOURCE", help="leave this source's images out")
args = ap.parse_args()
(a, classes), (b, _) = load(args.a), load(args.b)
files = sorted(set(a) & set(b))
if len(files) != len(a) or len(files) != len(b):
    sys.exit(f"the two evaluations hold different images ({len(a)} vs {len(b)}, {len(files)} shared)")
unknown = set(args.without) - {a[f]["source"] for f in files}
if unknown:
    sys.exit(f"--without: no images of source {', '.join(sorted(unknown))}")
files = [f for f in files if a[f]["source"] not in args.without]
y = np.array([classes.index(a[f]["label"]) for f in files])
ca = np.array([np.argmax(a[f]["prob"]) for f in files]) == y
cb = np.array([np.argmax(b[f]["prob"]) for f in files]) == y
left_out = f" (without {', '.join(args.without)})" if args.without else ""
print(f"n = {len(files)}{left_out}: accuracy A {ca.mean():.3f}, B {cb.mean():.3f}")
src = np.array([a[f]["source"] for f in files])
for k, name in enumerate(classes):
    for s in sorted(set(src)):
        m = (src == s) & (y == k)
        if m.any():
            print(f"  {name} sensitivity {s}: A {int(ca[m].sum())}/{int(m.sum())}, B {int(cb[m].sum())}/{int(m.sum())}")
print("exact McNemar:", mcnemar_exact(ca, cb))
