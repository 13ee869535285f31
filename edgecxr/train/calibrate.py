"""After training: fit the input guard, temperature scaling and the operating point; write them into
the checkpoint, from which every export carries them (issue 11 and issue 14, item 5).

* Guard: statistics from the training images' features; threshold at the 99.5th percentile of the
  validation CXRs' scores (times a margin, 1.0 by default), so that at least 99% of val CXRs pass. The
  ``combined`` candidate pools val with cross-fitted training scores instead (see guard_torch).
  Candidates include an outlier-exposure head fitted on damaged copies of the training images
  (:func:`damaged_copy`); the images named in ``outlier_exclude`` are left out of those copies, so an
  OOD set built from some training images (ours: ``ood_data/hard`` from ``calibration_data/calib``)
  still measures the head on images it never saw damaged.
* Temperature: one scalar fitted on val logits by minimising the negative log-likelihood;
  expected calibration error (15 bins) reported before and after.
* Operating point: the COVID-19 probability threshold (on calibrated probabilities) with the
  highest specificity whose val COVID-19 sensitivity is >= the target (95%), then lowered until every val
  COVID-19 image it keeps lies ``op_margin`` log-odds above it (room for an exported engine's numeric error);
  the finding is COVID-19 when its probability reaches the threshold, else the most probable other class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample
from edgecxr.metrics import auc_binary, per_source
from edgecxr.runtime.operating_point import finding_at


DAMAGES = ("rotate", "flip", "invert", "half", "crop")


def damaged_copy(gray: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of a radiograph that is no longer a usable frontal CXR: turned by 90/180/270 degrees, flipped
    upside down, inverted, cut to 35-60% of one side, or cut to a 8-30% patch anywhere."""
    h, w = gray.shape
    if kind == "rotate":
        return np.rot90(gray, int(rng.integers(1, 4)))
    if kind == "flip":
        return gray[::-1]
    if kind == "invert":
        return gray.max() + gray.min() - gray
    if kind == "half":
        f = rng.uniform(0.35, 0.6)
        cw, ch = max(8, int(w * f)), max(8, int(h * f))
        return (gray[:, :cw], gray[:, w - cw:], gray[:ch], gray[h - ch:])[int(rng.integers(4))]
    if kind == "crop":
        f = rng.uniform(0.08, 0.3)
        ch, cw = max(8, int(h * f)), max(8, int(w * f))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return gray[y:y + ch, x:x + cw]
    raise ValueError(f"unknown damage {kind!r}; one of {DAMAGES}")


def _images_and_damaged(samples: list[Sample], pcfg, donor=lambda s: True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each image preprocessed, and one damaged copy of each ``donor`` image (the kinds in turn): one decode each."""
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import preprocess

    rng = np.random.default_rng(seed)
    clean, damaged = [], []
    for s in samples:
        g = read_image(s.path)
        clean.append(preprocess(g, pcfg))
        if donor(s):
            kind = DAMAGES[len(damaged) % len(DAMAGES)]
            damaged.append(preprocess(np.ascontiguousarray(damaged_copy(g, kind, rng)), pcfg))
    return np.stack(clean), np.stack(damaged) if damaged else np.zeros((0, *clean[0].shape), np.float32)


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


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def fit_operating_point(probs: np.ndarray, y: np.ndarray, classes: list[str], positive: str = "COVID-19",
                        target_sensitivity: float = 0.95, margin: float = 0.0) -> dict:
    """The highest ``positive`` threshold whose val sensitivity reaches the target, placed halfway between the
    lowest positive score it keeps and the next lower val score: the same val decisions, but no val image sits on
    the threshold itself, where any numeric change (INT8, bf16, another engine) would flip it.

    ``margin`` (log-odds, > 0): then lowered until every val positive at or above it lies at least ``margin``
    log-odds above it, so that the small logit changes of an exported engine (INT8: a few hundredths RMS) cannot
    drop a positive the threshold was chosen to keep. Costs specificity; the report has both."""
    k = classes.index(positive)
    pos = y == k
    scores = sorted(set(probs[:, k].tolist()) | {0.0}, reverse=True)

    def point(thr: float, kept: float, below: float | None) -> dict:
        f = finding_at(probs, classes, positive, thr)
        return {"threshold": float(thr), "val_sensitivity": float(np.mean(f[pos] == k)) if pos.any() else float("nan"),
                "val_specificity": float(np.mean(f[~pos] != k)) if (~pos).any() else float("nan"),
                "val_accuracy": float(np.mean(f == y)), "val_score_kept": float(kept), "val_score_below": below}

    best = None
    for i, t in enumerate(scores):
        sens = float(np.mean(probs[pos, k] >= t)) if pos.any() else float("nan")
        if sens >= target_sensitivity:
            below = float(scores[i + 1]) if i + 1 < len(scores) else None
            best = point((t + below) / 2 if below is not None else t, t, below)
            break
    if best and margin > 0:
        thr, ps = best["threshold"], probs[pos, k]
        while True:  # each pass may take in positives that sit too close: at most one pass per positive
            kept = ps[ps >= thr]
            low = float(kept.min()) if kept.size else thr
            if not kept.size or _logit(low) - _logit(thr) >= margin - 1e-9:
                break
            thr = float(1 / (1 + np.exp(-(_logit(low) - margin))))
        below = [s for s in scores if s < thr]
        best = {**point(thr, low, below[0] if below else None), "margin_logit": margin,
                "without_margin": {key: best[key] for key in ("threshold", "val_sensitivity", "val_specificity",
                                                                "val_accuracy")}}
    return {"positive_class": positive, "target_sensitivity": target_sensitivity, **(best or {})}


def _scores(method: str, feature: str, k: int, tr: dict, ytr: np.ndarray, n_classes: int, shrinkage: float,
            outlier_heads: dict | None = None, combined: dict | None = None):
    """(fitted statistics, scoring function on a features dict) for one guard candidate."""
    from edgecxr.guard_torch import (combined_score, energy, fit_statistics, knn_bank, knn_score, mahalanobis,
                                     outlier_score)

    if method == "combined":
        g = combined[feature]
        return g, lambda o: combined_score(o[feature], g)
    if method == "outlier":
        head = outlier_heads[feature]
        return head, lambda o: outlier_score(o[feature], head)
    if method == "energy":
        return {}, lambda o: energy(o["logits"])
    if method == "knn":
        bank = knn_bank(tr[feature])
        return {"bank": bank}, lambda o: knn_score(o[feature], bank, k)
    st = fit_statistics(tr[feature], ytr, n_classes, shrinkage)
    return st, lambda o: mahalanobis(o[feature], st)


CANDIDATES = [("knn", "backbone", 5), ("knn", "backbone_meanstd", 5), ("knn", "penultimate", 5),
              ("mahalanobis", "backbone", 0), ("mahalanobis", "backbone_meanstd", 0), ("mahalanobis", "backbone_layout", 0),
              ("mahalanobis", "penultimate", 0), ("knn", "backbone_layout", 5),
              ("energy", "penultimate", 0), ("outlier", "backbone_meanstd", 0), ("combined", "backbone_meanstd", 0)]


def calibrate(checkpoint: Path, train: list[Sample], val: list[Sample], out: Path, ood: list[Path] | None = None,
              margin: float = 1.0, quantile: float = 0.995, method: str | None = None, shrinkage: float = 0.05,
              outlier_exclude: set[str] | None = None, op_margin: float = 0.15, op_target: float = 0.95) -> dict:
    """Fit guard, temperature and operating point; write a new checkpoint to ``out``; return the report.

    ``method`` None: measure every candidate (score x features) and keep the one that rejects the most
    of ``ood`` at a threshold where >= 99% of val CXRs pass (without ``ood``: k-NN on backbone features).
    ``outlier_exclude``: sha256 of training images to leave out of the damaged copies the outlier head learns from.
    ``op_target``: the val COVID-19 sensitivity the operating point must reach (issue 14: 0.95); a lower target calls
    fewer non-COVID-19 images COVID-19.
    """
    if not 0 < op_target <= 1:
        from edgecxr.errors import EdgeCXRError

        raise EdgeCXRError(f"op_target {op_target} must lie in (0, 1]: a val sensitivity, e.g. 0.95")
    import hashlib

    import torch

    from edgecxr.checkpoint import GUARD_PREFIX, load_model, save_checkpoint
    from edgecxr.guard_torch import forward_features
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess
    from edgecxr.runtime.batching import softmax

    model, meta = load_model(checkpoint)
    meta.pop("guard", None)
    meta.pop("operating_point", None)
    classes = meta["classes"]
    pcfg = PreprocessConfig.from_dict(meta["preprocess"])
    excl = outlier_exclude or set()
    donors = {s.path for s in train if not excl or hashlib.sha256(s.path.read_bytes()).hexdigest() not in excl}
    x_tr, x_dtr = _images_and_damaged(train, pcfg, lambda s: s.path in donors, seed=0)
    x_va, x_dva = _images_and_damaged(val, pcfg, seed=1)
    tr, va = forward_features(model, x_tr), forward_features(model, x_va)
    ytr = np.array([classes.index(s.label) for s in train])
    yva = np.array([classes.index(s.label) for s in val])
    oo = forward_features(model, np.stack([preprocess(read_image(p), pcfg) for p in ood])) if ood else None
    heads = {}
    if len(donors) >= 10 and len(val) >= 5:
        from edgecxr.guard_torch import fit_outlier_head

        dtr, dva = forward_features(model, x_dtr), forward_features(model, x_dva)
        heads = {f: fit_outlier_head(tr[f], dtr[f], va[f], dva[f]) for f in {c[1] for c in CANDIDATES if c[0] == "outlier"}}
        for h in heads.values():
            h["n_damaged"] = len(donors)
    combined = {}
    if heads:
        from edgecxr.guard_torch import fit_combined

        damaged_of = np.array([i for i, s in enumerate(train) if s.path in donors])
        for feat in {c[1] for c in CANDIDATES if c[0] == "combined"}:
            combined[feat] = fit_combined(tr[feat], ytr, dtr[feat], damaged_of, va[feat], dva[feat], len(classes),
                                          shrinkage, quantile, head=heads.get(feat))
    if method in ("outlier", "combined") and not heads:
        from edgecxr.errors import EdgeCXRError

        raise EdgeCXRError(f"the {method} guard needs >= 10 training images (outside --outlier-exclude) and >= 5 val images.")
    report: dict = {"guard_candidates": {}}
    fitted = {}
    for m, feat, k in CANDIDATES:
        if m in ("outlier", "combined") and not heads:
            continue
        name = f"{m}/{feat}" + (f"/k={k}" if m == "knn" else "")
        stats, score = _scores(m, feat, k, tr, ytr, len(classes), shrinkage, heads, combined)
        sv = score(va)
        if m == "combined":  # rescaled: each part's limit is 1 (see fit_combined)
            thr = margin
        else:
            q = float(np.quantile(sv, quantile))
            thr = q * margin if q > 0 else q + abs(q) * (margin - 1)
        cand = {"method": m, "feature": feat, "k": k, "threshold": thr, "val_accept_rate": float(np.mean(sv <= thr))}
        if heads:
            cand["damaged_val_reject_rate"] = float(np.mean(score(dva) > thr))  # val CXRs rotated, cropped, ...
        if oo is not None:
            so = score(oo)
            cand["ood_reject_rate"] = float(np.mean(so > thr))
            cand["auroc_val_vs_ood"] = auc_binary(np.r_[np.zeros(len(sv)), np.ones(len(so))], np.r_[sv, so])
        report["guard_candidates"][name] = cand
        fitted[name] = stats
    if method:
        name = next(n for n, c in report["guard_candidates"].items() if c["method"] == method)
    elif oo is not None:
        name = max(report["guard_candidates"], key=lambda n: (report["guard_candidates"][n]["ood_reject_rate"],
                                                              report["guard_candidates"][n]["auroc_val_vs_ood"]))
    else:
        name = "knn/backbone/k=5"
    chosen = report["guard_candidates"][name]
    if not np.isfinite(chosen["threshold"]):
        from edgecxr.errors import EdgeCXRError

        raise EdgeCXRError(f"guard {name}: the threshold is not finite; too few or degenerate training images.")
    scalars = {k: v for k, v in fitted[name].items() if not isinstance(v, np.ndarray)}
    guard = {**scalars, "shrinkage": shrinkage if chosen["method"] in ("mahalanobis", "combined") else None, "method": chosen["method"], "feature": chosen["feature"], "k": chosen["k"], "threshold": chosen["threshold"],
             "quantile": quantile, "margin": margin, "val_accept_rate": chosen["val_accept_rate"],
             "ood_reject_rate": chosen.get("ood_reject_rate"), "chosen_from": len(report["guard_candidates"]),
             "n_train": len(train), "n_val": len(val)}
    t = fit_temperature(va["logits"], yva)
    p_raw, p_cal = softmax(va["logits"]), softmax(va["logits"] / t)
    op = fit_operating_point(p_cal, yva, classes, target_sensitivity=op_target, margin=op_margin)
    f = finding_at(p_cal, classes, op["positive_class"], op["threshold"])
    onehot = np.eye(len(classes))[f]
    op.update(temperature=t, ece_val_before=ece(p_raw, yva), ece_val_after=ece(p_cal, yva),
              val_per_source=per_source(yva, onehot, classes, [s.source for s in val]))
    meta["guard"] = guard
    meta["operating_point"] = op
    state = model.state_dict()
    for key, arr in fitted[name].items():
        if isinstance(arr, np.ndarray):
            state[GUARD_PREFIX + key] = torch.from_numpy(np.ascontiguousarray(arr))
    save_checkpoint(state, meta, out)
    report.update(guard=guard, operating_point=op, checkpoint=str(out))
    return report
