"""The shipped model's Mahalanobis guard over its two knobs (rank of the low-rank covariance, shrinkage) and two
feature kinds: acceptance of every dev val/test CXR (non-commercial ones included) against rejection of ood_data/,
with the image rules applied as the runtime does. Statistics from the permissive training images, threshold at the
99.5th percentile of all val scores, as `edgecxr calibrate` does. Shows the trade-off issue 11 runs into: no setting
accepts >= 257/259 dev CXRs and rejects >= 48/50 OOD inputs with Mahalanobis alone (which is why the shipped guard is now
`combined`: see README, Input guard).

Run: python benchmarks/guard_grid.py > benchmarks/results/guard-grid.txt   (needs ../shared/cxr; ~3 min on 2 cores)
"""
import csv
from pathlib import Path

import numpy as np

from edgecxr.checkpoint import load_model
from edgecxr.guard_torch import fit_statistics, forward_features, mahalanobis
from edgecxr.imaging import read_image
from edgecxr.preprocess import PreprocessConfig, preprocess
from edgecxr.resources import default_checkpoint
from edgecxr.runtime.image_rules import ImageRules

ROOT = Path(__file__).resolve().parents[1]
man = ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"
rows = list(csv.DictReader(man.open()))
model, meta = load_model(default_checkpoint())
pcfg, classes, rules = PreprocessConfig.from_dict(meta["preprocess"]), meta["classes"], ImageRules()
FEATURES = ("backbone_meanstd", "backbone_layout")


def features(paths):
    grays = [read_image(p) for p in paths]
    f = forward_features(model, np.stack([preprocess(g, pcfg) for g in grays]))
    return {k: f[k] for k in FEATURES}, np.array([rules.check(g) is None for g in grays])


sets = {}
for name, keep in (("train", lambda r: r["split"] == "train" and r["non_commercial_only"] == "no"),
                   ("val", lambda r: r["split"] == "val"), ("test", lambda r: r["split"] == "test")):
    rr = [r for r in rows if keep(r)]
    sets[name] = (*features([man.parent / r["file"] for r in rr]), rr)
sets["ood"] = (*features(sorted((ROOT / "ood_data").rglob("*.png"))), None)
ytr = np.array([classes.index(r["class"]) for r in sets["train"][2]])
print(f"shipped checkpoint {default_checkpoint().name}; {len(ytr)} permissive training images; "
      f"val {len(sets['val'][1])}, test {len(sets['test'][1])}, ood {len(sets['ood'][1])}")
print("| feature | rank | shrinkage | val accepted | test accepted | all dev val+test | ood rejected (content alone) |")
print("|---|---|---|---|---|---|---|")
for feat in FEATURES:
    for rank in (16, 32, 64, 128):
        for shrink in (0.05, 0.1, 0.2, 0.4):
            st = fit_statistics(sets["train"][0][feat], ytr, len(classes), shrink, rank)
            s = {k: mahalanobis(v[0][feat], st) for k, v in sets.items()}
            thr = np.quantile(s["val"], 0.995)
            acc = {k: (s[k] <= thr) & sets[k][1] for k in ("val", "test")}
            rej = (s["ood"] > thr) | ~sets["ood"][1]
            n_all = int(acc["val"].sum() + acc["test"].sum())
            print(f"| {feat} | {rank} | {shrink} | {int(acc['val'].sum())}/{len(acc['val'])} | "
                  f"{int(acc['test'].sum())}/{len(acc['test'])} | {n_all}/{len(acc['val']) + len(acc['test'])} | "
                  f"{int(rej.sum())}/{len(rej)} ({int((s['ood'] > thr).sum())}) |")
