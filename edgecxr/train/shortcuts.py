"""Shortcut probe: does a checkpoint look at the lungs or at the rest of the film?

The model's input (the resized image, before normalisation) is altered in ways that keep or remove the lung fields;
accuracy per source and class under each, against the unaltered input, tells what the model leans on. Blanked pixels
take the image's own mean grey.

- ``whole``: the input as the runtime sees it;
- ``zoom``: the central square inside a band of ``band`` x side resized to the whole input (no artificial frame; a
  1.25x zoom at the default band, the most the training augmentation draws);
- ``no-border``: the band blanked, the lungs kept at their scale (the grey frame itself is new to a model);
- ``lungs-out``: only the band kept: a model that still finds a hospital's class here reads the hospital;
- ``blank``: every pixel grey: the model's answer to nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample
from edgecxr.metrics import mcnemar_exact, wilson_ci

MASKS = ("whole", "zoom", "no-border", "lungs-out", "blank")


def masked(gray: np.ndarray, mask: str, band: float = 0.1) -> np.ndarray:
    """A square float32 image with ``mask`` applied (see the module docstring)."""
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose one of {MASKS}")
    g = np.array(gray, dtype=np.float32)
    s = g.shape[0]
    b = max(1, int(round(band * s)))
    fill = float(gray.mean())
    if mask == "zoom":
        from PIL import Image

        inner = np.ascontiguousarray(g[b : s - b, b : s - b])
        return np.asarray(Image.fromarray(inner, mode="F").resize((s, s), Image.BILINEAR), np.float32)
    if mask == "no-border":
        inner = g[b : s - b, b : s - b].copy()
        g[:] = fill
        g[b : s - b, b : s - b] = inner
    elif mask == "lungs-out":
        g[b : s - b, b : s - b] = fill
    elif mask == "blank":
        g[:] = fill
    return g


def predict_masked(checkpoint: Path, grays: list[np.ndarray], band: float = 0.1, batch: int = 32) -> tuple[dict, dict, dict]:
    """{mask: predicted class index per image}, {mask: content-guard acceptance per image} (empty when the
    checkpoint has no guard) and the checkpoint's metadata."""
    import torch

    from edgecxr.checkpoint import load_model
    from edgecxr.guard_torch import GuardedClassifier
    from edgecxr.preprocess import PreprocessConfig, preprocess, resize_policy

    model, meta = load_model(checkpoint)
    guard = meta.get("guard")
    if guard:
        model = GuardedClassifier(model, guard).eval()
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    base = [resize_policy(np.ascontiguousarray(g, np.float32), cfg.size, cfg.resize) for g in grays]
    pred, accepted = {}, {}
    with torch.no_grad():
        for mask in MASKS:
            # preprocess() leaves a size x size image's geometry alone: only equalisation (if on) and normalisation
            xs = np.stack([preprocess(masked(g, mask, band), cfg) for g in base])
            parts = [model(torch.from_numpy(xs[i : i + batch])) for i in range(0, len(xs), batch)]
            logits = [p[0] if guard else p for p in parts]
            pred[mask] = np.concatenate([t.float().numpy() for t in logits]).argmax(1)
            if guard:
                score = np.concatenate([p[1].float().numpy().reshape(-1) for p in parts])
                accepted[mask] = score <= guard["threshold"]
    return pred, accepted, meta


def shortcut_probe(checkpoint: Path, samples: list[Sample], band: float = 0.1) -> dict:
    """Accuracy (all images and per source/class), McNemar against ``whole``, guard acceptance and the blank
    image's answers, for each mask; per-image predictions under each."""
    from edgecxr.imaging import read_image

    if not 0.02 <= band <= 0.4:
        raise ValueError(f"band must lie in [0.02, 0.4], not {band}")
    grays = [read_image(s.path) for s in samples]
    pred, accepted, meta = predict_masked(checkpoint, grays, band)
    classes = meta["classes"]
    y = np.array([classes.index(s.label) for s in samples])
    keys = np.array([f"{s.source or '?'}/{s.label}" for s in samples])
    groups = sorted(set(keys))
    out = {"band": band, "classes": classes, "groups": {g: int(np.sum(keys == g)) for g in groups}, "masks": {}}
    for m in MASKS:
        ok = pred[m] == y
        r = {"accuracy": float(ok.mean()), "ci95": list(wilson_ci(int(ok.sum()), len(ok))),
             "right": {g: int(ok[keys == g].sum()) for g in groups}}
        if m != "whole":
            r["mcnemar_vs_whole"] = mcnemar_exact(pred["whole"] == y, ok)
        if accepted:
            r["guard_accepts"] = int(accepted[m].sum())
        out["masks"][m] = r
    out["blank_predicted"] = {c: int(np.sum(pred["blank"] == i)) for i, c in enumerate(classes)}
    out["predictions"] = [{"file": str(s.path), "label": s.label, "source": s.source,
                           **{m: classes[int(pred[m][i])] for m in MASKS}} for i, s in enumerate(samples)]
    return out


def markdown(probe: dict, n_images: int) -> list[str]:
    """The probe as a Markdown table: k/n right per source and class under each input."""
    groups = list(probe["groups"])
    guard = "guard_accepts" in probe["masks"]["whole"]
    lines = [f"**shortcut probe** (band {100 * probe['band']:.0f}% of the side; k/n right; see `edgecxr.train.shortcuts`): "
             "accuracy that survives *lungs-out*, or collapses under *zoom*, is read from the film rather than the lungs", "",
             "| input | accuracy % [95% CI] | McNemar p vs whole | " + ("guard accepts | " if guard else "")
             + " | ".join(g.replace("/", " ") for g in groups) + " |",
             "|---|---|---|" + ("---|" if guard else "") + "---|" * len(groups)]
    for m, r in probe["masks"].items():
        p = r.get("mcnemar_vs_whole", {}).get("p_value")
        lines.append(f"| {m} | {100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] | "
                     + (f"{p:.2g}" if p is not None else "-") + " | "
                     + (f"{r['guard_accepts']}/{n_images} | " if guard else "")
                     + " | ".join(f"{r['right'][g]}/{probe['groups'][g]}" for g in groups) + " |")
    lines += ["", "blank input predicted as: " + ", ".join(f"{c} {v}" for c, v in probe["blank_predicted"].items()), ""]
    return lines
