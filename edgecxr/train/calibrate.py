"""After training: fit the input guard, temperature scaling and the operating point; write them into
the checkpoint, from which every export carries them (issue 11 and issue 14, item 5).

* Guard: statistics from the training images' features; threshold at the 99.5th percentile of the
  validation CXRs' scores times a margin, so that at least 99% of real CXRs pass.
* Temperature: one scalar fitted on val logits by minimising the negative log-likelihood;
  expected calibration error (15 bins) reported before and after.
* Operating point: the COVID-19 probability threshold (on calibrated probabilities) with the
  highest specificity whose val COVID-19 sensitivity is >= the target (95%); the finding is
  COVID-19 when its probability reaches the threshold, else the most probable other class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample
from edgecxr.metrics import auc_binary, per_source


def _images(samples: list[Sample], pcfg) -> np.ndarray:
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import preprocess

    return np.stack([preprocess(read_image(s.path), pcfg) for s in samples])


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(np.mean(pred[m] == y[m]) - conf[m].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    from edgecxr.runtime.batching import softmax

    grid = np.exp(np.linspace(np.log(0.25), np.log(8), 400))
    nll = [-np.mean(np.log(softmax(logits / t)[np.arange(len(y)), y] + 1e-12)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def finding_at(probs: np.ndarray, classes: list[str], positive: str, threshold: float) -> np.ndarray:
    """Class index of the finding: ``positive`` when its probability >= threshold, else the best other class."""
    k = classes.index(positive)
    other = probs.copy()
    other[:, k] = -1
    return np.where(probs[:, k] >= threshold, k, other.argmax(1))


def fit_operating_point(probs: np.ndarray, y: np.ndarray, classes: list[str], positive: str = "COVID-19",
                        target_sensitivity: float = 0.95) -> dict:
    k = classes.index(positive)
    best = None
    for t in sorted(set(np.round(probs[:, k], 6).tolist()) | {0.0}, reverse=True):
        f = finding_at(probs, classes, positive, t)
        pos = y == k
        sens = float(np.mean(f[pos] == k)) if pos.any() else float("nan")
        spec = float(np.mean(f[~pos] != k)) if (~pos).any() else float("nan")
        if sens >= target_sensitivity:
            best = {"threshold": float(t), "val_sensitivity": sens, "val_specificity": spec,
                    "val_accuracy": float(np.mean(f == y))}
            break
    return {"positive_class": positive, "target_sensitivity": target_sensitivity, **(best or {})}


def calibrate(checkpoint: Path, train: list[Sample], val: list[Sample], out: Path, ood: list[Path] | None = None,
              margin: float = 1.1, quantile: float = 0.995, method: str = "mahalanobis") -> dict:
    """Fit guard, temperature and operating point; write a new checkpoint to ``out``; return the report."""
    from edgecxr.checkpoint import GUARD_PREFIX, load_model, save_checkpoint
    from edgecxr.guard_torch import energy, features_and_logits, fit_statistics, mahalanobis
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess
    from edgecxr.runtime.batching import softmax

    model, meta = load_model(checkpoint)
    meta.pop("guard", None)
    meta.pop("operating_point", None)
    classes = meta["classes"]
    pcfg = PreprocessConfig.from_dict(meta["preprocess"])
    ftr, _ = features_and_logits(model, _images(train, pcfg))
    ytr = np.array([classes.index(s.label) for s in train])
    fva, lva = features_and_logits(model, _images(val, pcfg))
    yva = np.array([classes.index(s.label) for s in val])
    stats = fit_statistics(ftr, ytr, len(classes))
    scores_val = {"mahalanobis": mahalanobis(fva, stats), "energy": energy(lva)}
    report: dict = {"guard_candidates": {}}
    if ood:
        xo = np.stack([preprocess(read_image(p), pcfg) for p in ood])
        fo, lo = features_and_logits(model, xo)
        scores_ood = {"mahalanobis": mahalanobis(fo, stats), "energy": energy(lo)}
    for name, sv in scores_val.items():
        thr = float(np.quantile(sv, quantile) * margin if name == "mahalanobis" else np.quantile(sv, quantile) + abs(np.quantile(sv, quantile)) * (margin - 1))
        cand = {"threshold": thr, "val_accept_rate": float(np.mean(sv <= thr))}
        if ood:
            so = scores_ood[name]
            cand["ood_reject_rate"] = float(np.mean(so > thr))
            cand["auroc_val_vs_ood"] = auc_binary(np.r_[np.zeros(len(sv)), np.ones(len(so))], np.r_[sv, so])
        report["guard_candidates"][name] = cand
    chosen = report["guard_candidates"][method]
    guard = {"method": method, "threshold": chosen["threshold"], "quantile": quantile, "margin": margin,
             "val_accept_rate": chosen["val_accept_rate"], "ood_reject_rate": chosen.get("ood_reject_rate"),
             "feature_dim": int(ftr.shape[1]), "n_train": len(train), "n_val": len(val)}
    t = fit_temperature(lva, yva)
    p_raw, p_cal = softmax(lva), softmax(lva / t)
    op = fit_operating_point(p_cal, yva, classes)
    f = finding_at(p_cal, classes, op["positive_class"], op["threshold"])
    onehot = np.eye(len(classes))[f]
    op.update(temperature=t, ece_val_before=ece(p_raw, yva), ece_val_after=ece(p_cal, yva),
              val_per_source=per_source(yva, onehot, classes, [s.source for s in val]))
    meta["guard"] = guard
    meta["operating_point"] = op
    state = model.state_dict()
    if method == "mahalanobis":
        import torch

        state[GUARD_PREFIX + "mean"] = torch.from_numpy(stats["mean"])
        state[GUARD_PREFIX + "precision_cholesky"] = torch.from_numpy(stats["precision_cholesky"])
    save_checkpoint(state, meta, out)
    report.update(guard=guard, operating_point=op, checkpoint=str(out))
    return report
