"""Does test-time augmentation help? Mean softmax over a few views of each image, against the single view the
runtime uses, with the exact McNemar test per checkpoint (issue 14, a research question: every view costs one more
forward pass on the device, so nothing ships unless the gain is real).

Views (on the centred square the runtime's "crop" policy sees, before resizing): the whole square (the runtime's
input), its central 90%, and its four 90% corners (small shifts and zoom, inside what training's random resized
crops draw); ``--rotate`` adds the whole square turned by -5 and +5 degrees (training draws up to 10).

Run: python benchmarks/tta.py CHECKPOINT [CHECKPOINT ...] --manifest ../shared/cxr/dev/MANIFEST.csv \
        --split test --out benchmarks/results/tta
Writes, per checkpoint, an `edgecxr eval`-style eval.json (TTA predictions) under OUT/<name>-<split>/ and a Markdown
table OUT/summary-<split>.md; `benchmarks/paired.py` and `benchmarks/ensemble.py` read the eval.json files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from edgecxr.artifact import atomic_write_json
from edgecxr.data.layouts import load_samples
from edgecxr.metrics import evaluate, mcnemar_exact, per_source, wilson_ci
from edgecxr.preprocess import PreprocessConfig, preprocess
from edgecxr.runtime.batching import softmax


def views(gray: np.ndarray, rotate: bool) -> list[np.ndarray]:
    """The image itself first (exactly what the runtime classifies), then the shifted/zoomed (and rotated) ones."""
    h, w = gray.shape
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    sq = gray[top : top + m, left : left + m]
    c = int(round(0.9 * m))
    d = m - c
    out = [gray, sq[d // 2 : d // 2 + c, d // 2 : d // 2 + c]]
    out += [sq[y : y + c, x : x + c] for y in (0, d) for x in (0, d)]
    if rotate:
        img = Image.fromarray(np.ascontiguousarray(sq, np.float32), mode="F")
        out += [np.asarray(img.rotate(a, resample=Image.BILINEAR), np.float32) for a in (-5, 5)]
    return out


def logits_per_view(checkpoint: Path, grays: list[np.ndarray], rotate: bool, batch: int = 32) -> tuple[np.ndarray, dict]:
    """(n_images, n_views, n_classes) logits of a checkpoint."""
    import torch

    from edgecxr.checkpoint import load_model

    model, meta = load_model(checkpoint)
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    xs = np.stack([np.stack([preprocess(v, cfg) for v in views(g, rotate)]) for g in grays])  # (n, v, 3, s, s)
    n, v = xs.shape[:2]
    flat = xs.reshape(n * v, *xs.shape[2:])
    out = []
    with torch.no_grad():
        for i in range(0, len(flat), batch):
            out.append(model(torch.from_numpy(flat[i : i + batch])).float().numpy())
    return np.concatenate(out).reshape(n, v, -1), meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--manifest", default="../shared/cxr/dev/MANIFEST.csv")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rotate", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tta"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from edgecxr.imaging import read_image

    torch.set_num_threads(a.threads)
    samples = [s for s in load_samples(a.manifest) if s.split == a.split]
    grays = [read_image(s.path) for s in samples]
    sources = [s.source for s in samples]
    rows = []
    for ck in a.checkpoints:
        lv, meta = logits_per_view(ck, grays, a.rotate)
        classes = meta["classes"]
        y = np.array([classes.index(s.label) for s in samples])
        single, tta = softmax(lv[:, 0]), softmax(lv).mean(1)
        name = ck.parent.name if ck.name == "best.safetensors" else ck.stem
        res = evaluate(y, tta, classes, groups=[s.group for s in samples], n_boot=200)
        res["per_source"] = per_source(y, tta, classes, sources)
        res.update({"model": str(ck), "arch": meta["arch"], "classes": classes, "kind": "checkpoint with TTA",
                    "tta": {"views": int(lv.shape[1]), "rotate": a.rotate}, "n_images": len(samples),
                    "predictions": [{"file": str(s.path), "label": s.label, "source": s.source,
                                     "prob": p.round(6).tolist(), "prob_single_view": q.round(6).tolist(),
                                     "prob_views": softmax(v).round(5).tolist()}
                                    for s, p, q, v in zip(samples, tta, single, lv)]})
        c1, c2 = single.argmax(1) == y, tta.argmax(1) == y
        per_view = [float(np.mean(lv[:, j].argmax(1) == y)) for j in range(lv.shape[1])]
        res["tta"]["view_accuracy"] = per_view
        d = a.out / f"{name}-{a.split}"
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "eval.json", res)
        k = classes.index("COVID-19")
        cov = {src: (int(c1[(y == k) & (np.array(sources) == src)].sum()), int(c2[(y == k) & (np.array(sources) == src)].sum()),
                     int(((y == k) & (np.array(sources) == src)).sum())) for src in sorted(set(np.array(sources)[y == k]))}
        p = mcnemar_exact(c1, c2)
        rows.append((name, c1, c2, p, cov, per_view))
        print(f"{name}: single {c1.mean():.3f}, TTA {c2.mean():.3f} ({lv.shape[1]} views), McNemar p = {p['p_value']:.2g}; "
              f"each view alone: {', '.join(f'{100 * v:.1f}' for v in per_view)}", flush=True)

    srcs = sorted(rows[0][4])
    lines = [f"# Test-time augmentation, dev {a.split} ({len(samples)} images), {rows[0][1].size} per model",
             "", f"`python benchmarks/tta.py ... --split {a.split}{' --rotate' if a.rotate else ''}`; views: "
             + ("whole, central 90%, four 90% corners, +-5 degrees" if a.rotate else "whole, central 90%, four 90% corners")
             + "; mean softmax ('each view alone': the same views in this order). Exact McNemar on per-image correctness, single view vs TTA.", "",
             "| checkpoint | single view % [95% CI] | TTA % [95% CI] | right only single / only TTA | McNemar p | each view alone % | "
             + " | ".join(f"COVID-19 {s} single / TTA" for s in srcs) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(srcs)]
    for name, c1, c2, p, cov, pv in rows:
        ci = [wilson_ci(int(c.sum()), len(c)) for c in (c1, c2)]
        lines.append(f"| {name} | {100 * c1.mean():.1f} [{100 * ci[0][0]:.1f}, {100 * ci[0][1]:.1f}] | "
                     f"{100 * c2.mean():.1f} [{100 * ci[1][0]:.1f}, {100 * ci[1][1]:.1f}] | "
                     f"{int((c1 & ~c2).sum())} / {int((c2 & ~c1).sum())} | {p['p_value']:.2g} | "
                     + " / ".join(f"{100 * v:.1f}" for v in pv) + " | "
                     + " | ".join(f"{cov[s][0]} / {cov[s][1]} of {cov[s][2]}" for s in srcs) + " |")
    delta = np.array([c2.mean() - c1.mean() for _, c1, c2, *_ in rows])
    lines += ["", f"Mean change in accuracy over the {len(rows)} checkpoints: {100 * delta.mean():+.2f} points "
              f"(min {100 * delta.min():+.1f}, max {100 * delta.max():+.1f})."]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"summary-{a.split}{'-rot' if a.rotate else ''}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
