"""Does a model look at the lungs or at the rest of the film? Accuracy per source and class when parts of the
runtime's 224-px input are blanked or cut away (issue 14: evaluation that exposes shortcuts). The masks are
described in `edgecxr/train/shortcuts.py`; `edgecxr eval CHECKPOINT DATA --shortcut-probe` gives one model's table.

Run: python benchmarks/shortcut_probe.py CHECKPOINT [CHECKPOINT ...] --split test \
        --out benchmarks/results/shortcut-probe
Writes OUT/<name>-<split>.json per checkpoint, OUT/summary-<split>.md and OUT/<split>.png (accuracy per source and
class under each input, one panel per checkpoint).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import load_samples
from edgecxr.train.shortcuts import MASKS, markdown, shortcut_probe


def plot(results: list[tuple[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(results[0][1]["groups"])
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), dpi=110, squeeze=False)
    w = 0.84 / len(MASKS)
    for ax, (name, probe) in zip(axes[:, 0], results):
        for j, mask in enumerate(MASKS):
            r = probe["masks"][mask]["right"]
            ax.bar(np.arange(len(groups)) + (j - (len(MASKS) - 1) / 2) * w,
                   [100 * r[g] / probe["groups"][g] for g in groups], w, label=mask)
        ax.set_xticks(range(len(groups)), [g.replace("/", "\n") for g in groups], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% right", fontsize=8)
        ax.set_title(name, fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=len(MASKS), loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--manifest", default="../shared/cxr/dev/MANIFEST.csv")
    ap.add_argument("--split", default="test")
    ap.add_argument("--band", type=float, default=0.1, help="width of the border band, share of the side")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/shortcut-probe"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    samples = [s for s in load_samples(a.manifest) if a.split == "all" or s.split == a.split]
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    lines = [f"# Shortcut probe, dev {a.split} ({len(samples)} images; band {100 * a.band:.0f}% of the side)", "",
             f"`python benchmarks/shortcut_probe.py ... --split {a.split} --band {a.band}`; inputs: " + ", ".join(MASKS)
             + " (`edgecxr/train/shortcuts.py`).", ""]
    for ck in a.checkpoints:
        probe = shortcut_probe(ck, samples, a.band)
        name = ck.parent.name if ck.name == "best.safetensors" else ck.stem
        probe.update({"checkpoint": str(ck), "split": a.split})
        (a.out / f"{name}-{a.split}.json").write_text(json.dumps(probe, indent=1))
        results.append((name, probe))
        lines += [f"## {name}", ""] + markdown(probe, len(samples))
        print(f"{name}: " + ", ".join(f"{m} {100 * probe['masks'][m]['accuracy']:.1f}%" for m in MASKS), flush=True)
    (a.out / f"summary-{a.split}.md").write_text("\n".join(lines) + "\n")
    plot(results, a.out / f"{a.split}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
