"""The shipped guard's threshold margin against acceptance of every dev val/test CXR (non-commercial ones included) and
rejection of ood_data/ (image rules included). Run: python benchmarks/guard_margin.py  (needs ../shared/cxr)
"""
import csv
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample
from edgecxr.resources import default_checkpoint
from edgecxr.train.evaluate import checkpoint_outputs, guard_accepts

ROOT = Path(__file__).resolve().parents[1]
man = ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"
rows = [r for r in csv.DictReader(man.open()) if r["split"] in ("val", "test")]
files = [man.parent / r["file"] for r in rows]
ood = sorted((ROOT / "ood_data").rglob("*.png"))
outs, m = checkpoint_outputs(default_checkpoint(), [Sample(p, "Normal") for p in files + ood])
s, thr = outs["guard"].reshape(-1), m["guard"]["threshold"]
cxr_s = s[: len(files)]
split = np.array([r["split"] for r in rows])
for margin in (1.0, 1.05, 1.1, 1.2, 1.3):
    accepted = guard_accepts(outs, m, margin)
    acc, rej = accepted[: len(files)], ~accepted[len(files):]
    print(f"margin {margin}: dev val accepted {acc[split == 'val'].mean():.3f}, test {acc[split == 'test'].mean():.3f}, "
          f"all {int(acc.sum())}/{len(acc)} | ood_data rejected {int(rej.sum())}/{len(rej)}")
print("rejected at margin 1.0:", [f"{f.relative_to(man.parent)} ({v:.1f})" for f, v in zip(files, cxr_s) if v > thr])
