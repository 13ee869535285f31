"""Does pixel noise separate NIH Normal from NIH Pneumonia? (one source, so no hospital difference in between)

Measures `source_probe.high_pass_noise` of every NIH image's 224-px input per split and prints the medians, the AUC of
noise for Pneumonia and a Mann-Whitney p. Run: python benchmarks/nih_noise.py [MANIFEST]
"""
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from source_probe import load, FEATURES
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score
x, samples = load(sys.argv[1] if len(sys.argv) > 1 else "../shared/cxr/dev/MANIFEST.csv")
i = FEATURES.index("noise")
for split in ("train", "val", "test"):
    nn = [r[i] for r, s in zip(x, samples) if s.split == split and s.source == "nih" and s.label == "Normal"]
    pn = [r[i] for r, s in zip(x, samples) if s.split == split and s.source == "nih" and s.label == "Pneumonia"]
    y = [0]*len(nn) + [1]*len(pn)
    print(split, f"NIH Normal median {np.median(nn):.4f} (n={len(nn)}), Pneumonia {np.median(pn):.4f} (n={len(pn)}), AUC noise->Pneumonia {roc_auc_score(y, nn+pn):.3f}, MWU p {mannwhitneyu(nn, pn).pvalue:.2g}")
