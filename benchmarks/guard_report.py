"""The shipped model's input guard on the shipped dev val/test CXRs and on ood_data/, per group.

Run: python benchmarks/guard_report.py
"""
import numpy as np
from pathlib import Path
from edgecxr.data.layouts import Sample
from edgecxr.resources import default_checkpoint, val_dir, eval_dir
from edgecxr.train.evaluate import checkpoint_outputs
cxr = sorted(val_dir().rglob("*.png")) + sorted(eval_dir().rglob("*.png"))
ood = sorted((Path(__file__).resolve().parents[1] / "ood_data").rglob("*.png"))
outs, m = checkpoint_outputs(default_checkpoint(), [Sample(p, "Normal") for p in cxr + ood])
acc = outs["guard"].reshape(-1) <= m["guard"]["threshold"]
print("permissive val+test CXRs accepted", int(acc[:len(cxr)].sum()), "/", len(cxr), [str(p) for p, a in zip(cxr, acc) if not a])
rej = ~acc[len(cxr):]
for g in ("natural", "medical", "synthetic", "hard"):
    idx = [i for i, p in enumerate(ood) if p.parent.name == g]
    print(g, int(rej[idx].sum()), "/", len(idx), [ood[i].name for i in idx if not rej[i]])
print("ood rejected", int(rej.sum()), "/", len(ood))
