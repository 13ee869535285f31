"""Classification metrics with intervals (numpy only): the numbers every report in edgecxr uses."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def auc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney statistic (ties count one half)."""
    y = np.asarray(y, bool)
    pos, neg = score[y], score[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def point_metrics(y_true: np.ndarray, prob: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro F1, macro AUC, and per class: sensitivity, specificity, PPV, F1, AUC."""
    y_true = np.asarray(y_true, int)
    prob = np.asarray(prob, np.float64)
    k = len(classes)
    y_pred = prob.argmax(1)
    cm = confusion(y_true, y_pred, k)
    n = cm.sum()
    per = {}
    for c, name in enumerate(classes):
        tp = cm[c, c]
        fn = cm[c].sum() - tp
        fp = cm[:, c].sum() - tp
        tn = n - tp - fn - fp
        sens, ppv = _safe(tp, tp + fn), _safe(tp, tp + fp)
        per[name] = {
            "sensitivity": sens, "specificity": _safe(tn, tn + fp), "ppv": ppv,
            "f1": _safe(2 * tp, 2 * tp + fp + fn), "auc": auc_binary(y_true == c, prob[:, c]), "support": int(tp + fn),
        }
    f1s = [v["f1"] for v in per.values() if not math.isnan(v["f1"])]
    aucs = [v["auc"] for v in per.values() if not math.isnan(v["auc"])]
    return {
        "n": int(n), "accuracy": _safe(np.trace(cm), n),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "per_class": per, "confusion": cm.tolist(),
    }


SCALARS = ("accuracy", "macro_f1", "macro_auc")


def bootstrap_ci(y_true: np.ndarray, prob: np.ndarray, classes: list[str], n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> dict[str, list[float]]:
    """Percentile bootstrap intervals for accuracy, macro F1/AUC and per-class sensitivity/specificity."""
    rng = np.random.default_rng(seed)
    y_true, prob = np.asarray(y_true, int), np.asarray(prob)
    n = len(y_true)
    keys = list(SCALARS) + [f"{c}/{m}" for c in classes for m in ("sensitivity", "specificity")]
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = point_metrics(y_true[idx], prob[idx], classes)
        for key in keys:
            v = m[key] if "/" not in key else m["per_class"][key.split("/")[0]][key.split("/")[1]]
            if not math.isnan(v):
                draws[key].append(v)
    return {k: [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]
            for k, v in draws.items() if v}


def evaluate(y_true, prob, classes: list[str], groups: list[str] | None = None, n_boot: int = 1000) -> dict:
    """Image-level metrics with 95% bootstrap intervals, plus per-patient metrics when groups are given.

    Per-patient: the probabilities of a patient's images are averaged (a patient has one class).
    """
    out = {"image": point_metrics(y_true, prob, classes)}
    out["image"]["ci95"] = bootstrap_ci(y_true, prob, classes, n_boot=n_boot)
    if groups is not None and len(set(groups)) < len(groups):
        gy, gp = aggregate_by_group(np.asarray(y_true), np.asarray(prob), groups)
        out["patient"] = point_metrics(gy, gp, classes)
        out["patient"]["ci95"] = bootstrap_ci(gy, gp, classes, n_boot=n_boot)
    return out


def aggregate_by_group(y: np.ndarray, prob: np.ndarray, groups: list[str]) -> tuple[np.ndarray, np.ndarray]:
    idx: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        idx[g].append(i)
    gy = np.array([y[v[0]] for v in idx.values()])
    gp = np.stack([prob[v].mean(0) for v in idx.values()])
    return gy, gp


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired correctness. Returns discordant counts and two-sided p."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n01 = int(np.sum(a & ~b))  # A right, B wrong
    n10 = int(np.sum(~a & b))
    n = n01 + n10
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(n01, n10)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"a_only": n01, "b_only": n10, "p_value": min(1.0, 2 * p)}


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Top-1 agreement between two predictions (class indices)."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    return float(np.mean(a == b)) if len(a) else float("nan")


def per_source(y_true, prob, classes: list[str], sources: list[str | None]) -> dict:
    """Metrics per image source (hospital / collection): n, accuracy and each present class's
    sensitivity with its count and Wilson 95% interval. In data where class is confounded with
    source, a model that learned the source shows up here, not in the pooled numbers."""
    y_true, prob = np.asarray(y_true, int), np.asarray(prob)
    pred = prob.argmax(1)
    out: dict[str, dict] = {}
    for src in sorted({s or "unknown" for s in sources}):
        idx = np.array([(s or "unknown") == src for s in sources])
        y, p = y_true[idx], pred[idx]
        row: dict = {"n": int(idx.sum()), "accuracy": _safe(np.sum(y == p), len(y)), "sensitivity": {}}
        for c, name in enumerate(classes):
            n_c = int(np.sum(y == c))
            if n_c:
                k = int(np.sum((y == c) & (p == c)))
                row["sensitivity"][name] = {"k": k, "n": n_c, "value": k / n_c, "ci95": list(wilson_ci(k, n_c))}
        out[src] = row
    return out


def worst_source_sensitivity(y_true, prob, classes: list[str], sources: list[str | None], cls: str,
                             min_n: int = 5) -> float:
    """Lowest per-source sensitivity of ``cls`` over sources with at least ``min_n`` images of it (NaN if none)."""
    vals = [r["sensitivity"][cls]["value"] for r in per_source(y_true, prob, classes, sources).values()
            if cls in r["sensitivity"] and r["sensitivity"][cls]["n"] >= min_n]
    return min(vals) if vals else float("nan")
