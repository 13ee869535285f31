"""A guard's threshold margin against acceptance of every dev val/test CXR (non-commercial ones included), of the
non-commercial training images (CXRs a permissive-trained model and its guard never saw), and rejection of ood_data/
(image rules included). Run: python benchmarks/guard_margin.py [CHECKPOINT]  (default: the shipped one; needs ../shared/cxr)
"""
import csv
import sys
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample
from edgecxr.resources import default_checkpoint
from edgecxr.train.evaluate import checkpoint_outputs, guard_accepts

ROOT = Path(__file__).resolve().parents[1]
ck = Path(sys.argv[1]) if len(sys.argv) > 1 else default_checkpoint()
man = ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"
rows = [r for r in csv.DictReader(man.open())
        if r["split"] in ("val", "test") or (r["split"] == "train" and r["non_commercial_only"] == "yes")]
files = [man.parent / r["file"] for r in rows]
ood = sorted((ROOT / "ood_data").rglob("*.png"))
outs, m = checkpoint_outputs(ck, [Sample(p, "Normal") for p in files + ood])
s, thr = outs["guard"].reshape(-1), m["guard"]["threshold"]
split = np.array([r["split"] for r in rows])
print(f"{ck.name}: guard {m['guard']['method']}/{m['guard']['feature']}, threshold {thr:.4g}")
for margin in (1.0, 1.05, 1.1, 1.2, 1.3):
    accepted = guard_accepts(outs, m, margin)
    acc, rej = accepted[: len(files)], ~accepted[len(files):]
    vt = acc[split != "train"]
    print(f"margin {margin}: dev val accepted {int(acc[split == 'val'].sum())}/{int((split == 'val').sum())}, "
          f"test {int(acc[split == 'test'].sum())}/{int((split == 'test').sum())}, val+test {int(vt.sum())}/{len(vt)} "
          f"({vt.mean():.1%}); non-commercial train {int(acc[split == 'train'].sum())}/{int((split == 'train').sum())} "
          f"| ood_data rejected {int(rej.sum())}/{len(rej)}")
accepted = guard_accepts(outs, m)
print("CXRs rejected at margin 1.0:", [f"{f.relative_to(man.parent)} ({v:.3g})" for f, v, a in
                                       zip(files, s, accepted) if not a])
print("ood_data accepted at margin 1.0:", [f"{p.relative_to(ROOT)} ({v:.3g})" for p, v, a in
                                           zip(ood, s[len(files):], accepted[len(files):]) if a])
