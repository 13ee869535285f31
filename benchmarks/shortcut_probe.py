"""Does a model look at the lungs or at the rest of the film? Accuracy per source and class when parts of the
runtime's 224-px input are blanked (issue 14: evaluation that exposes shortcuts).

Masks (on the resized image the model sees, before normalisation; blanked pixels get the image's own mean grey):
  whole      the input as the runtime sees it
  zoom       the central square inside the band (``--band``, 10% of the side by default) resized to the whole
             input: the border gone without an artificial frame (a 1.25x zoom, the most training's augmentation draws)
  no-border  the outer band blanked: text, markers, collimation and the film's edges gone, the lung fields kept at
             their scale (the grey frame itself is new to the model: read it with ``zoom``)
  lungs-out  the central square inside that band blanked, only the band kept: a model that still finds COVID-19 here
             reads the hospital, not the disease
  blank      every pixel the mean grey: the model's answer to nothing at all

Run: python benchmarks/shortcut_probe.py CHECKPOINT [CHECKPOINT ...] --split test \
        --out benchmarks/results/shortcut-probe
Writes OUT/<name>-<split>.json per checkpoint, OUT/summary-<split>.md and OUT/<split>.png (accuracy per source and
class under each mask, one panel per checkpoint).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import load_samples
from edgecxr.metrics import wilson_ci
from edgecxr.preprocess import PreprocessConfig, preprocess, resize_policy

MASKS = ("whole", "zoom", "no-border", "lungs-out", "blank")


def masked(gray224: np.ndarray, mask: str, band: float) -> np.ndarray:
    g = gray224.copy()
    s = g.shape[0]
    b = int(round(band * s))
    fill = float(gray224.mean())
    if mask == "zoom":
        from PIL import Image

        inner = np.ascontiguousarray(g[b : s - b, b : s - b])
        g = np.asarray(Image.fromarray(inner, mode="F").resize((s, s), Image.BILINEAR), np.float32)
    elif mask == "no-border":
        inner = g[b : s - b, b : s - b].copy()
        g[:] = fill
        g[b : s - b, b : s - b] = inner
    elif mask == "lungs-out":
        g[b : s - b, b : s - b] = fill
    elif mask == "blank":
        g[:] = fill
    return g


def predictions(checkpoint: Path, grays: list[np.ndarray], band: float, batch: int = 32) -> tuple[dict, dict, dict]:
    """{mask: predicted class index per image}, {mask: whether the content guard accepts each image} (empty without
    a guard) and the checkpoint's metadata."""
    import torch

    from edgecxr.checkpoint import load_model
    from edgecxr.guard_torch import GuardedClassifier

    model, meta = load_model(checkpoint)
    guard = meta.get("guard")
    if guard:
        model = GuardedClassifier(model, guard).eval()
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    base = [resize_policy(np.ascontiguousarray(g, np.float32), cfg.size, cfg.resize) for g in grays]
    out, accepted = {}, {}
    with torch.no_grad():
        for mask in MASKS:
            # preprocess() leaves a size x size image's geometry alone: only equalisation (if on) and normalisation
            xs = np.stack([preprocess(masked(g, mask, band), cfg) for g in base])
            parts = [model(torch.from_numpy(xs[i : i + batch])) for i in range(0, len(xs), batch)]
            if guard:
                out[mask] = np.concatenate([p[0].float().numpy() for p in parts]).argmax(1)
                accepted[mask] = np.concatenate([p[1].float().numpy().reshape(-1) for p in parts]) <= guard["threshold"]
            else:
                out[mask] = np.concatenate([p.float().numpy() for p in parts]).argmax(1)
    return out, accepted, meta


def plot(results: list[tuple[str, dict]], groups: list[tuple[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), dpi=110, squeeze=False)
    w = 0.84 / len(MASKS)
    for ax, (name, acc) in zip(axes[:, 0], results):
        for j, mask in enumerate(MASKS):
            ax.bar(np.arange(len(groups)) + (j - (len(MASKS) - 1) / 2) * w, [100 * acc[mask][g] for g in groups], w, label=mask)
        ax.set_xticks(range(len(groups)), [f"{src}\n{lab}" for src, lab in groups], fontsize=8)
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
    if not 0.02 <= a.band <= 0.4:
        ap.error("--band must lie in [0.02, 0.4]")

    import torch

    from edgecxr.imaging import read_image

    torch.set_num_threads(a.threads)
    samples = [s for s in load_samples(a.manifest) if a.split == "all" or s.split == a.split]
    grays = [read_image(s.path) for s in samples]
    keys = [(s.source, s.label) for s in samples]
    groups = sorted(set(keys))
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    lines = [f"# Shortcut probe, dev {a.split} ({len(samples)} images; band {100 * a.band:.0f}% of the side)", "",
             f"`python benchmarks/shortcut_probe.py ... --split {a.split} --band {a.band}`. % right per source and class "
             "(k/n) with each part of the input blanked to the image's mean grey; 'predicted' counts what the model "
             "answers for a blank image. Masks: " + ", ".join(MASKS) + ".", ""]
    for ck in a.checkpoints:
        pred, accepted, meta = predictions(ck, grays, a.band)
        classes = meta["classes"]
        y = np.array([classes.index(s.label) for s in samples])
        name = ck.parent.name if ck.name == "best.safetensors" else ck.stem
        acc = {m: {g: float(np.mean((pred[m] == y)[[k == g for k in keys]])) for g in groups} | {"all": float(np.mean(pred[m] == y))}
               for m in MASKS}
        blank_calls = {c: int(np.sum(pred["blank"] == i)) for i, c in enumerate(classes)}
        (a.out / f"{name}-{a.split}.json").write_text(json.dumps(
            {"checkpoint": str(ck), "arch": meta["arch"], "band": a.band, "split": a.split, "classes": classes,
             "accuracy": {m: {("all" if g == "all" else f"{g[0]}/{g[1]}"): v for g, v in d.items()} for m, d in acc.items()},
             "blank_predicted": blank_calls,
             "guard_accepts": {m: int(v.sum()) for m, v in accepted.items()},
             "predictions": [{"file": str(s.path), "label": s.label, "source": s.source,
                              **{m: classes[int(pred[m][i])] for m in MASKS}} for i, s in enumerate(samples)]}, indent=1))
        results.append((name, acc))
        n = {g: sum(k == g for k in keys) for g in groups}
        lines += [f"## {name} ({meta['arch']})", "", "| mask | all % [95% CI] | " + " | ".join(f"{s} {l}" for s, l in groups) + " |",
                  "|---|---|" + "---|" * len(groups)]
        for m in MASKS:
            k_all = int(round(acc[m]["all"] * len(samples)))
            lo, hi = wilson_ci(k_all, len(samples))
            lines.append(f"| {m} | {100 * acc[m]['all']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                         + " | ".join(f"{int(round(acc[m][g] * n[g]))}/{n[g]}" for g in groups) + " |")
        lines += ["", "blank image predicted as: " + ", ".join(f"{c} {v}" for c, v in blank_calls.items()), ""]
        if accepted:
            lines += ["the checkpoint's content guard (what the runtime does with such an input) accepts: "
                      + ", ".join(f"{m} {int(v.sum())}/{len(v)}" for m, v in accepted.items()), ""]
        print(f"{name}: " + ", ".join(f"{m} {100 * acc[m]['all']:.1f}%" for m in MASKS), flush=True)
    (a.out / f"summary-{a.split}.md").write_text("\n".join(lines) + "\n")
    plot(results, groups, a.out / f"{a.split}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
