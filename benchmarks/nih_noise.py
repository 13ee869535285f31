"""Does pixel noise separate NIH Normal from NIH Pneumonia? One source, so no hospital difference lies in between.

Measures `source_probe.high_pass_noise` of every NIH image's 224-px input, per split, and prints both classes' medians,
the AUC of noise for Pneumonia and a two-sided Mann-Whitney p (`benchmarks/ablation.md`, "How far statistics
without anatomy get").

Run: python benchmarks/nih_noise.py [MANIFEST]     (default ../shared/cxr/dev/MANIFEST.csv; seconds on 2 cores)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from source_probe import FEATURES, load  # noqa: E402

DEFAULT_MANIFEST = "../shared/cxr/dev/MANIFEST.csv"


def noise_of(x: np.ndarray, samples: list, split: str, label: str) -> list[float]:
    """The noise feature of the NIH images of one split and class."""
    i = FEATURES.index("noise")
    return [float(row[i]) for row, s in zip(x, samples) if s.split == split and s.source == "nih" and s.label == label]


def line(split: str, normal: list[float], pneumonia: list[float]) -> str:
    y = [0] * len(normal) + [1] * len(pneumonia)
    auc = roc_auc_score(y, normal + pneumonia)
    p = mannwhitneyu(normal, pneumonia).pvalue
    return (f"{split} NIH Normal median {np.median(normal):.4f} (n={len(normal)}), Pneumonia {np.median(pneumonia):.4f} "
            f"(n={len(pneumonia)}), AUC noise->Pneumonia {auc:.3f}, MWU p {p:.2g}")


def main(argv: list[str]) -> None:
    x, samples = load(argv[0] if argv else DEFAULT_MANIFEST)
    for split in ("train", "val", "test"):
        print(line(split, noise_of(x, samples, split, "Normal"), noise_of(x, samples, split, "Pneumonia")))


if __name__ == "__main__":
    main(sys.argv[1:])
