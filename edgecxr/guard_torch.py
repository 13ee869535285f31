"""The input guard's torch side: the exported graph's second output, and fitting its statistics.

Score: Mahalanobis distance of the classifier's own feature vector (``model.features``) to the
nearest class mean, with one shared (tied) covariance, shrunk toward a scaled identity because
there are fewer training images than feature dimensions. Lee et al. (NeurIPS 2018) introduced
the class-conditional Gaussian view; we use only the penultimate features. The graph computes
``sqrt(min_c ||(f - mu_c) L||^2)`` with ``L L^T`` the precision matrix: two matmuls and a
reduction, which ONNX Runtime, OpenVINO and TensorRT all run in the same forward pass.
The energy score (``-logsumexp(logits)``, Liu et al. 2020) is computed too when fitting, for comparison.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GuardedClassifier(nn.Module):
    """(logits, guard score) from one forward pass."""

    def __init__(self, model: nn.Module, guard: dict) -> None:
        super().__init__()
        self.model = model
        self.method = guard.get("method", "mahalanobis")
        if self.method == "energy":
            return
        mean = torch.as_tensor(np.asarray(guard["mean"], np.float32))  # (C, D)
        chol = torch.as_tensor(np.asarray(guard["precision_cholesky"], np.float32))  # (D, D)
        self.register_buffer("chol", chol)
        self.register_buffer("mean_proj", mean @ chol)  # (C, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.features(x)
        logits = self.model.classifier(f)
        if self.method == "energy":
            return logits, -torch.logsumexp(logits, dim=1)
        z = f @ self.chol  # (N, D)
        d2 = (z.unsqueeze(1) - self.mean_proj.unsqueeze(0)).pow(2).sum(-1)  # (N, C)
        return logits, torch.sqrt(d2.min(dim=1).values.clamp_min(0))


@torch.no_grad()
def features_and_logits(model: nn.Module, x: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    fs, ls = [], []
    for i in range(0, len(x), batch):
        f = model.features(torch.from_numpy(x[i:i + batch]))
        fs.append(f.numpy())
        ls.append(model.classifier(f).numpy())
    return np.concatenate(fs).astype(np.float64), np.concatenate(ls).astype(np.float64)


def fit_statistics(feats: np.ndarray, y: np.ndarray, n_classes: int, shrinkage: float = 0.2) -> dict:
    """Class means and the Cholesky factor of the shrunk tied covariance's inverse."""
    means = np.stack([feats[y == c].mean(0) for c in range(n_classes)])
    centred = feats - means[y]
    cov = centred.T @ centred / max(1, len(feats) - n_classes)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    precision = np.linalg.inv(cov)
    precision = (precision + precision.T) / 2
    chol = np.linalg.cholesky(precision)
    return {"mean": means.astype(np.float32), "precision_cholesky": chol.astype(np.float32)}


def mahalanobis(feats: np.ndarray, stats: dict) -> np.ndarray:
    z = feats @ stats["precision_cholesky"].astype(np.float64)
    m = stats["mean"].astype(np.float64) @ stats["precision_cholesky"].astype(np.float64)
    return np.sqrt(((z[:, None, :] - m[None]) ** 2).sum(-1).min(1))


def energy(logits: np.ndarray) -> np.ndarray:
    m = logits.max(1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(logits - m).sum(1)))
