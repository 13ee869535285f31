"""Learning curves of a training run: loss, val accuracy / macro-F1 (the selection score's best epoch marked) and
the per-source val sensitivities, one figure. ``edgecxr train`` writes ``curves.png`` beside ``metrics.csv`` every 5
epochs and at the end; for a finished run::

    python -m edgecxr.train.curves runs/x/metrics.csv [--out curves.png]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def read_history(path: Path) -> list[dict]:
    """The rows of a ``metrics.csv`` as floats (empty cells dropped)."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Write the learning curves of ``history`` (one dict per epoch, as ``metrics.csv``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no epochs to plot")
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    axes[0].plot(ep, [h.get("train_loss") for h in history], color="tab:gray")
    axes[0].set_title("train loss")
    for key, label in (("val_accuracy", "accuracy"), ("val_macro_f1", "macro F1"), ("val_macro_auc", "macro AUC")):
        if any(key in h for h in history):
            axes[1].plot(ep, [h.get(key) for h in history], label=label)
    if any("val_score" in h for h in history):
        best = max(history, key=lambda h: h.get("val_score", float("-inf")))
        axes[1].axvline(best["epoch"], color="black", ls=":", lw=1,
                        label=f"best epoch {int(best['epoch'])} (score {best['val_score']:.3f})")
    axes[1].set_title("val (all images)")
    axes[1].legend(fontsize=8, loc="lower right")
    sens = sorted({k for h in history for k in h if k.startswith("val_sens_")})
    for key in sens:
        cls, _, src = key[len("val_sens_"):].rpartition("_")
        axes[2].plot(ep, [h.get(key) for h in history], label=f"{cls} / {src}",
                     ls="-" if cls.startswith("COVID") else "--", lw=1.2)
    axes[2].set_title("val sensitivity per class / source")
    if sens:
        axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        ax.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Plot a training run's learning curves from its metrics.csv.")
    ap.add_argument("metrics", type=Path, help="metrics.csv written by `edgecxr train`")
    ap.add_argument("--out", type=Path, help="output PNG (default: curves.png beside the CSV)")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    if not a.metrics.is_file():
        print(f"error: {a.metrics}: no such file (pass the metrics.csv of a training run)", file=sys.stderr)
        return 2
    out = a.out or a.metrics.with_name("curves.png")
    name = a.metrics.parent.name if a.metrics.stem == "metrics" else a.metrics.stem.removesuffix("-metrics")
    print(plot_curves(read_history(a.metrics), out, a.title if a.title is not None else name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
