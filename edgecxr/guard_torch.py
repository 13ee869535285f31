"""The input guard's torch side: the exported graph's second output, and fitting its statistics.

Scores, all computed from the classifier's own features in the same forward pass (so ONNX Runtime,
OpenVINO and TensorRT compute them with no extra pass), higher = less like the training X-rays:

* ``knn`` - one minus the cosine similarity to the k-th nearest training image's feature vector
  (Sun et al., ICML 2022: deep nearest neighbours); the bank of normalised training features is a
  constant of the graph (a MatMul and a TopK).
* ``mahalanobis`` - distance to the nearest class mean under one shared covariance, shrunk toward a
  scaled identity (Lee et al., NeurIPS 2018): two MatMuls and a reduction.
* ``energy`` - ``-logsumexp(logits)`` (Liu et al., NeurIPS 2020).
* ``outlier`` - a logistic head on the features, fitted to tell the training CXRs from damaged or
  mis-oriented copies of them (rotated, flipped, inverted, half and tiny crops: outlier exposure,
  Hendrycks et al., ICLR 2019); its logit is the score: a dot product and an add.
* ``combined`` - the outlier head with a Mahalanobis backstop, each rescaled so that 0 is a typical CXR
  and 1 its own limit, the larger of the two is the score (limit 1). The head catches damaged and
  mis-oriented radiographs without penalising a hospital that is rare in the training images (which
  Mahalanobis on permissive statistics does: it rejected 5 of 77 unseen Cohen-collection CXRs); the
  distance, with its limit at the largest in-distribution score, catches what is far from any CXR
  (photographs, patterns). Both limits come from val scores pooled with cross-fitted training scores.

Features: ``penultimate`` (what the classifier reads), ``backbone`` (spatial mean of the ReLU'd
last dense block), ``backbone_meanstd`` (its spatial mean and standard deviation) or ``backbone_layout``
(mean and standard deviation plus the mean of each image quadrant: pooled statistics are blind to
layout, so a CXR turned 90 degrees or cropped to one lung looks normal to them, not to the quadrants). ``edgecxr calibrate`` measures every combination on val CXRs and an out-of-distribution
set and keeps the chosen one; see the model card for the numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

METHODS = ("knn", "mahalanobis", "energy", "outlier", "combined")
FEATURES = ("penultimate", "backbone", "backbone_meanstd", "backbone_layout")


def backbone_vector(m: torch.Tensor, feature: str) -> torch.Tensor:
    """Spatial mean (``backbone``), mean and standard deviation (``backbone_meanstd``), or those plus the
    four quadrant means (``backbone_layout``; with an odd map size the middle row/column is in both halves)."""
    mean = m.mean(dim=(2, 3))
    if feature == "backbone":
        return mean
    var = ((m - mean[:, :, None, None]) ** 2).mean(dim=(2, 3))  # two-pass: no E[x^2] - E[x]^2 cancellation
    parts = [mean, torch.sqrt(var)]
    if feature == "backbone_layout":
        h, w = m.shape[2], m.shape[3]
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        for rows in (m[:, :, :h2], m[:, :, h - h2:]):
            parts += [rows[:, :, :, :w2].mean(dim=(2, 3)), rows[:, :, :, w - w2:].mean(dim=(2, 3))]
    return torch.cat(parts, dim=1)


class ExportModule(nn.Module):
    """What is exported: logits, the guard score (when fitted) and the heatmap maps (when asked), one pass."""

    def __init__(self, model: nn.Module, guard: dict | None, maps: bool = True, probe_size: int = 64) -> None:
        super().__init__()
        self.model, self.maps = model, maps
        self.guard = GuardedClassifier(model, guard) if guard else None
        if maps:
            with torch.no_grad():
                self.n_maps = len(self.model.forward_maps(torch.zeros(1, 3, probe_size, probe_size))[2])
        else:
            self.n_maps = 0

    @property
    def output_names(self) -> list[str]:
        return ["logits"] + (["guard"] if self.guard else []) + [f"maps{i}" for i in range(self.n_maps)]

    def forward(self, x: torch.Tensor):
        fused, backbone, maps = self.model.forward_maps(x)
        logits = self.model.classifier(fused)
        out = [logits]
        if self.guard is not None:
            out.append(self.guard.score(fused, backbone, logits))
        if self.maps:
            out += maps
        return tuple(out) if len(out) > 1 else logits


class GuardedClassifier(nn.Module):
    """(logits, guard score) from one forward pass."""

    def __init__(self, model: nn.Module, guard: dict) -> None:
        super().__init__()
        self.model = model
        self.method = guard.get("method", "mahalanobis")
        self.feature = guard.get("feature", "penultimate")
        self.k = int(guard.get("k", 1))
        if self.method in ("mahalanobis", "combined"):
            self.register_buffer("mean", torch.as_tensor(np.asarray(guard["mean"], np.float32)))  # (C, D)
            self.register_buffer("components", torch.as_tensor(np.asarray(guard["components"], np.float32)))  # (D, r)
            self.register_buffer("inv_lambda", torch.as_tensor(np.asarray(guard["inv_lambda"], np.float32)))  # (r,)
            self.inv_residual = float(guard["inv_residual"])
        if self.method in ("outlier", "combined"):
            self.register_buffer("center", torch.as_tensor(np.asarray(guard["center"], np.float32)))  # (D,)
            self.register_buffer("weight", torch.as_tensor(np.asarray(guard["weight"], np.float32)))  # (D,)
            self.bias = float(guard["bias"])
        if self.method == "combined":
            self.rescale = tuple(float(guard[k]) for k in ("o_ref", "o_scale", "m_ref", "m_scale"))
        if self.method == "knn":
            self.register_buffer("bank_t", torch.as_tensor(np.asarray(guard["bank"], np.float32)).t().contiguous())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused, backbone = self.model.features_and_backbone(x)
        logits = self.model.classifier(fused)
        return logits, self.score(fused, backbone, logits)

    def score(self, fused: torch.Tensor, backbone: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.method == "energy":
            return -torch.logsumexp(logits, dim=1)
        f = fused if self.feature == "penultimate" else backbone_vector(backbone, self.feature)
        if self.method == "outlier":
            return self._outlier(f)
        if self.method == "combined":
            o_ref, o_scale, m_ref, m_scale = self.rescale
            return torch.maximum((self._outlier(f) - o_ref) / o_scale, (self._mahalanobis(f) - m_ref) / m_scale)
        if self.method == "knn":
            f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
            sim = f @ self.bank_t  # (N, bank)
            return 1 - torch.topk(sim, self.k, dim=1).values[:, -1]
        return self._mahalanobis(f)

    def _outlier(self, f: torch.Tensor) -> torch.Tensor:  # centred first: a smaller dot product, kinder to bf16
        return ((f - self.center) * self.weight).sum(dim=1) + self.bias

    def _mahalanobis(self, f: torch.Tensor) -> torch.Tensor:
        z = f.unsqueeze(1) - self.mean.unsqueeze(0)  # (N, C, D)
        p = z @ self.components  # (N, C, r): coordinates in the top principal directions
        # the residual outside those directions, formed explicitly: |z|^2 - |p|^2 cancels catastrophically in
        # bf16/fp16 (OpenVINO's default on AVX-512 BF16 CPUs: score correlation with FP32 0.24 -> 0.9998)
        r = z - p @ self.components.t()
        d2 = (p * p * self.inv_lambda).sum(-1) + (r * r).sum(-1) * self.inv_residual
        return torch.sqrt(d2.min(dim=1).values.clamp_min(0))


@torch.no_grad()
def forward_features(model: nn.Module, x: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    """penultimate features, backbone features and logits, float64."""
    model.eval()
    out: dict[str, list] = {k: [] for k in FEATURES + ("logits",)}
    for i in range(0, len(x), batch):
        f, b = model.features_and_backbone(torch.from_numpy(x[i:i + batch]))
        out["penultimate"].append(f.numpy())
        for feature in FEATURES[1:]:
            out[feature].append(backbone_vector(b, feature).numpy())
        out["logits"].append(model.classifier(f).numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def features_and_logits(model: nn.Module, x: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    o = forward_features(model, x, batch)
    return o["penultimate"], o["logits"]


def fit_statistics(feats: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float = 0.05, rank: int = 64) -> dict:
    """Class means and a low-rank form of the shrunk tied covariance: its top ``rank`` principal directions
    with their variances, and one variance for the rest (so the graph carries D x rank numbers, not D x D)."""
    present = [c for c in range(n_classes) if np.any(y == c)]  # a class without training images has no mean
    means = np.stack([feats[y == c].mean(0) for c in present])
    centred = feats - means[np.searchsorted(present, y)]
    dof = max(1, len(feats) - len(present))
    d = feats.shape[1]
    # eigenpairs of the tied covariance from the SVD of the centred features (N x D: cheap for wide D)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    w, v = sv ** 2 / dof, vt.T
    c = float(np.sum(w)) / d  # trace / D
    rank = min(rank, d - 1, len(w))
    lam = (1 - shrinkage) * np.maximum(w[:rank], 0) + shrinkage * c
    rest = (1 - shrinkage) * float(np.sum(w[rank:])) / max(1, d - rank) + shrinkage * c
    return {"mean": means.astype(np.float32), "components": np.ascontiguousarray(v[:, :rank]).astype(np.float32),
            "inv_lambda": (1 / lam).astype(np.float32), "inv_residual": float(1 / rest)}


def mahalanobis(feats: np.ndarray, stats: dict) -> np.ndarray:
    z = feats[:, None, :] - stats["mean"].astype(np.float64)[None]
    c = stats["components"].astype(np.float64)
    p = z @ c
    r = z - p @ c.T  # as the graph computes it (see GuardedClassifier.score)
    d2 = (p ** 2 * stats["inv_lambda"]).sum(-1) + (r ** 2).sum(-1) * stats["inv_residual"]
    return np.sqrt(np.maximum(d2.min(1), 0))


def outlier_score(feats: np.ndarray, head: dict) -> np.ndarray:
    return (feats - head["center"].astype(np.float64)) @ head["weight"].astype(np.float64) + head["bias"]


def combined_score(feats: np.ndarray, guard: dict) -> np.ndarray:
    """The ``combined`` score: max of the rescaled outlier logit and Mahalanobis distance (limit 1)."""
    return np.maximum((outlier_score(feats, guard) - guard["o_ref"]) / guard["o_scale"],
                      (mahalanobis(feats, guard) - guard["m_ref"]) / guard["m_scale"])


def fit_combined(tr: np.ndarray, y: np.ndarray, damaged: np.ndarray, damaged_of: np.ndarray, val: np.ndarray,
                 val_damaged: np.ndarray, n_classes: int, shrinkage: float = 0.05, quantile: float = 0.995,
                 folds: int = 5, seed: int = 0, head: dict | None = None) -> dict:
    """Fit the ``combined`` guard. ``damaged[i]`` is a damaged copy of training image ``damaged_of[i]``;
    ``head``: the outlier head already fitted on these arrays (fitted here when None).

    Limits from in-distribution scores no statistic has seen: val, pooled with each training image scored by
    statistics and a head fitted without its fold (``folds``-fold cross-fitting). The head's limit is the
    ``quantile`` of that pool, the distance's the pool's maximum (a backstop for what is far from every CXR)."""
    head = head or fit_outlier_head(tr, damaged, val, val_damaged)
    st = fit_statistics(tr, y, n_classes, shrinkage)
    order = np.random.default_rng(seed).permutation(len(tr))
    cv_o, cv_m = np.zeros(len(tr)), np.zeros(len(tr))
    for f in range(folds):
        held = order[f::folds]
        keep = np.setdiff1d(order, held)
        dk = np.isin(damaged_of, keep)
        h = fit_outlier_head(tr[keep], damaged[dk], val, val_damaged, cs=(head["C"],))
        cv_o[held] = outlier_score(tr[held], h)
        cv_m[held] = mahalanobis(tr[held], fit_statistics(tr[keep], y[keep], n_classes, shrinkage))
    pool_o, pool_m = np.r_[outlier_score(val, head), cv_o], np.r_[mahalanobis(val, st), cv_m]
    t_o, t_m = float(np.quantile(pool_o, quantile)), float(pool_m.max())
    o_ref, m_ref = float(np.median(pool_o)), float(np.median(pool_m))
    return {**head, **st, "o_ref": o_ref, "o_scale": max(t_o - o_ref, 1e-6), "m_ref": m_ref,
            "m_scale": max(t_m - m_ref, 1e-6), "outlier_limit": t_o, "mahalanobis_limit": t_m,
            "pooled_scores": len(pool_o), "folds": folds}


def fit_outlier_head(pos: np.ndarray, neg: np.ndarray, val_pos: np.ndarray, val_neg: np.ndarray,
                     cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)) -> dict:
    """Logistic regression of training CXRs (0) against their damaged copies (1) on standardised features;
    the inverse regularisation C is chosen by AUROC on val CXRs against damaged copies of *them*. The
    standardisation is folded into the returned (center, weight, bias): score = (f - center) . weight + bias."""
    from sklearn.linear_model import LogisticRegression

    from edgecxr.metrics import auc_binary

    x, y = np.r_[pos, neg], np.r_[np.zeros(len(pos)), np.ones(len(neg))]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    best = None
    for c in cs:
        lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit((x - mu) / sd, y)
        head = {"center": mu.astype(np.float32), "weight": (lr.coef_[0] / sd).astype(np.float32),
                "bias": float(lr.intercept_[0])}
        auc = auc_binary(np.r_[np.zeros(len(val_pos)), np.ones(len(val_neg))],
                         np.r_[outlier_score(val_pos, head), outlier_score(val_neg, head)])
        if best is None or auc > best[0] + 1e-9:
            best = (auc, c, head)
    auc, c, head = best
    return {**head, "C": c, "val_auroc_damaged": float(auc)}


def knn_bank(feats: np.ndarray) -> np.ndarray:
    return (feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def knn_score(feats: np.ndarray, bank: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    f = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    sim = f @ bank.astype(np.float64).T
    sim = -np.sort(-sim, axis=1)
    return 1 - sim[:, k if exclude_self else k - 1]


def energy(logits: np.ndarray) -> np.ndarray:
    m = logits.max(1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(logits - m).sum(1)))
