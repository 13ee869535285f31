"""The shipped model's input guard on the shipped dev val/test CXRs and on ood_data/, per group: the runtime's
image rules (shape, structure; edgecxr/runtime/image_rules.py) then the learned content check, as the runtime
applies them. Also every dev CXR in ../shared/cxr (all sources) through the image rules alone.

Run: python benchmarks/guard_report.py
"""
import csv
from pathlib import Path


from edgecxr.data.layouts import Sample
from edgecxr.imaging import load_gray
from edgecxr.resources import default_checkpoint, eval_dir, val_dir
from edgecxr.runtime.image_rules import ImageRules
from edgecxr.train.evaluate import checkpoint_outputs, guard_accepts

ROOT = Path(__file__).resolve().parents[1]
rules = ImageRules()
cxr = sorted(val_dir().rglob("*.png")) + sorted(eval_dir().rglob("*.png"))
ood = sorted((ROOT / "ood_data").rglob("*.png"))
outs, m = checkpoint_outputs(default_checkpoint(), [Sample(p, "Normal") for p in cxr + ood])
content = outs["guard"].reshape(-1) <= m["guard"]["threshold"]
rule = outs["image_rules_ok"]
acc = guard_accepts(outs, m)
print("permissive val+test CXRs accepted", int(acc[:len(cxr)].sum()), "/", len(cxr), [str(p) for p, a in zip(cxr, acc) if not a])
rej = ~acc[len(cxr):]
for g in ("natural", "medical", "radiographs", "synthetic", "hard"):
    idx = [i for i, p in enumerate(ood) if p.parent.name == g]
    print(g, int(rej[idx].sum()), "/", len(idx), "missed:", [ood[i].name for i in idx if not rej[i]],
          "by the image rules:", [ood[i].name for i in idx if not rule[len(cxr) + i]])
print("ood rejected", int(rej.sum()), "/", len(ood), f"(content check alone: {int((~content[len(cxr):]).sum())},",
      f"image rules alone: {int((~rule[len(cxr):]).sum())})")
man = ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"
if man.exists():
    rows = list(csv.DictReader(man.open()))
    bad = [r["file"] for r in rows if rules.check(load_gray(man.parent / r["file"])) is not None]
    print("all dev CXRs (every source and split) passing the image rules", len(rows) - len(bad), "/", len(rows), bad)
