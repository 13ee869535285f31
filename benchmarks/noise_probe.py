"""Does a model read Stony Brook's pixel noise as COVID-19? (issue 14: evaluation that exposes shortcuts)

Stony Brook's images reached this set by another path than the other sources' (shrunk to 240 x 240 upstream, the
others to a 256-px short side with Lanczos; `../shared/cxr/SOURCES.md`) and keep more pixel-level noise
(`benchmarks/source_probe.py`). This probe changes only that statistic in the model's 224-px input and
classifies the images again:

- ``whole``: the input as the runtime sees it;
- ``smoothed``: every image blurred (Gaussian, sigma chosen on the *training* images so that Stony Brook's median noise
  falls to the other sources' median);
- ``grained``: white Gaussian noise added to every image (its sd chosen on the training images so that the other
  sources' median noise rises to Stony Brook's).

A model that finds Stony Brook's COVID-19 from the lungs keeps finding it smoothed; one that reads the noise loses it,
and starts calling grained images of other sources COVID-19.

Run: python benchmarks/noise_probe.py CHECKPOINT [CHECKPOINT ...] [--split test|val|val+test]
        [--out benchmarks/results/noise-probe]
Writes OUT/summary-<split>.md (one row per model first, then each model per source and class) and
OUT/results-<split>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import load_samples
from edgecxr.imaging import read_image
from edgecxr.metrics import mcnemar_exact
from edgecxr.preprocess import gaussian_smooth as smooth, resize_policy

sys.path.insert(0, str(Path(__file__).parent))
from source_probe import high_pass_noise as noise  # noqa: E402

CONDITIONS = ("whole", "smoothed", "grained")
SEED = 0


def grain(g: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(g + rng.normal(0.0, sd, g.shape), 0.0, 1.0).astype(np.float32)


def fit_levels(noisy: list[np.ndarray], clean: list[np.ndarray]) -> dict:
    """The blur sigma that brings the noisy group's median noise to the clean group's, and the noise sd that brings
    the clean group's to the noisy group's (grid search; training images only; every 4th clean image for the sd)."""
    target_low, target_high = np.median([noise(g) for g in clean]), np.median([noise(g) for g in noisy])
    sigmas = np.round(np.arange(0.2, 2.01, 0.05), 2)
    sigma = min(sigmas, key=lambda s: abs(np.median([noise(smooth(g, s)) for g in noisy]) - target_low))
    sds = np.round(np.arange(0.001, 0.0501, 0.001), 3)
    sd = min(sds, key=lambda s: abs(np.median([noise(grain(g, s, np.random.default_rng(SEED))) for g in clean[::4]])
                                    - target_high))
    return {"sigma": float(sigma), "sd": float(sd), "median_noise_noisy": float(target_high),
            "median_noise_clean": float(target_low)}


def conditions(grays: list[np.ndarray], levels: dict) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(SEED)
    return {"whole": grays, "smoothed": [smooth(g, levels["sigma"]) for g in grays],
            "grained": [grain(g, levels["sd"], rng) for g in grays]}


def predict(checkpoint: Path, inputs: dict[str, list[np.ndarray]], batch: int = 32) -> tuple[dict, list[str]]:
    """{condition: predicted class index per image} for a checkpoint (its own preprocessing, no guard)."""
    import torch

    from edgecxr.checkpoint import load_model
    from edgecxr.preprocess import PreprocessConfig, preprocess

    model, meta = load_model(checkpoint)
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    if cfg.size != 224 or cfg.resize != "crop":
        raise SystemExit(f"{checkpoint}: the probe's inputs are 224-px crops; this checkpoint expects "
                         f"{cfg.size} px, {cfg.resize}")
    out = {}
    with torch.no_grad():
        for name, grays in inputs.items():
            xs = np.stack([preprocess(g, cfg) for g in grays])
            out[name] = np.concatenate([model(torch.from_numpy(xs[i:i + batch])).float().numpy()
                                        for i in range(0, len(xs), batch)]).argmax(1)
    return out, meta["classes"]


def summarise(pred: dict, classes: list[str], samples: list, noisy_source: str = "sbu") -> dict:
    """Per condition: accuracy (McNemar against ``whole``), right and called-COVID-19 counts per source/class, and the
    three counts the probe is about, each with its paired exact McNemar test against ``whole``: the noisy source's
    COVID-19 images found, the other sources' COVID-19 images found, non-COVID-19 images called COVID-19."""
    y = np.array([classes.index(s.label) for s in samples])
    src = np.array([s.source for s in samples])
    keys = np.array([f"{s.source}/{s.label}" for s in samples])
    groups = sorted(set(keys))
    covid = classes.index("COVID-19")
    sets = {"noisy_covid_found": (src == noisy_source) & (y == covid), "other_covid_found": (src != noisy_source) & (y == covid),
            "non_covid_called_covid": y != covid}
    r = {}
    for c in CONDITIONS:
        ok, called = pred[c] == y, pred[c] == covid
        r[c] = {"accuracy": float(ok.mean()),
                "right": {g: [int(ok[keys == g].sum()), int((keys == g).sum())] for g in groups},
                "called_covid": {g: int(called[keys == g].sum()) for g in groups},
                **{name: [int(called[m].sum()), int(m.sum())] for name, m in sets.items()}}
        if c != "whole":
            r[c]["mcnemar_vs_whole"] = mcnemar_exact(pred["whole"] == y, ok)["p_value"]
            base = pred["whole"] == covid
            r[c]["mcnemar"] = {name: mcnemar_exact(base[m], called[m])["p_value"] for name, m in sets.items()}
    return r


def compact(models: dict, noisy_source: str) -> list[str]:
    """One row per model and a pooled row: what smoothing does to COVID-19 findings, what grain does to the rest."""
    cols = (("noisy_covid_found", "smoothed", f"{noisy_source} COVID-19 found: whole -> smoothed"),
            ("other_covid_found", "smoothed", "other COVID-19 found: whole -> smoothed"),
            ("non_covid_called_covid", "grained", "non-COVID-19 called COVID-19: whole -> grained"),
            ("noisy_covid_found", "grained", f"{noisy_source} COVID-19 found: whole -> grained"))
    lines = ["| model | " + " | ".join(c[2] + " (McNemar p)" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    pooled = {(k, c): [0, 0, 0] for k, c, _ in cols}
    for name, r in models.items():
        cells = []
        for k, c, _ in cols:
            (a, n), (b, _) = r["whole"][k], r[c][k]
            cells.append(f"{a}/{n} -> {b}/{n} ({r[c]['mcnemar'][k]:.2g})")
            pooled[(k, c)] = [pooled[(k, c)][0] + a, pooled[(k, c)][1] + b, pooled[(k, c)][2] + n]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"| all {len(models)} models, pooled | "
                 + " | ".join(f"{a}/{n} -> {b}/{n}" for a, b, n in pooled.values()) + " |")
    return lines


def markdown(name: str, r: dict) -> list[str]:
    groups = list(r["whole"]["right"])
    lines = [f"## {name}", "", "| input | accuracy | McNemar p vs whole | "
             + " | ".join(f"{g.replace('/', ' ')}: right (called COVID-19)" for g in groups) + " |",
             "|---|---|---|" + "---|" * len(groups)]
    for c, v in r.items():
        p = v.get("mcnemar_vs_whole")
        lines.append(f"| {c} | {100 * v['accuracy']:.1f}% | " + (f"{p:.2g}" if p is not None else "-") + " | "
                     + " | ".join(f"{k}/{n} ({v['called_covid'][g]})" for g, (k, n) in v["right"].items()) + " |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--manifest", default="../shared/cxr/dev/MANIFEST.csv")
    ap.add_argument("--split", default="test", choices=("val", "test", "val+test"))
    ap.add_argument("--noisy-source", default="sbu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/noise-probe"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    samples = load_samples(a.manifest)
    train = [s for s in samples if s.split == "train"]
    if not any(s.source == a.noisy_source for s in train):
        raise SystemExit(f"no training images of source {a.noisy_source!r} to fit the noise levels on")

    def base(s):
        return resize_policy(read_image(s.path), 224, "crop")

    levels = fit_levels([base(s) for s in train if s.source == a.noisy_source],
                        [base(s) for s in train if s.source != a.noisy_source])
    ev = [s for s in samples if s.split in a.split.split("+")]
    inputs = conditions([base(s) for s in ev], levels)
    lines = [f"# Noise probe, dev {a.split} ({len(ev)} images)", "",
             f"`python benchmarks/noise_probe.py {' '.join(map(str, a.checkpoints))} --split {a.split}`. Fitted on the training images: {a.noisy_source}"
             f" median noise {levels['median_noise_noisy']:.4f}, the others' {levels['median_noise_clean']:.4f}; "
             f"*smoothed*: Gaussian blur sigma {levels['sigma']} px; *grained*: white noise sd {levels['sd']} "
             f"(seed {SEED}). Cells: right k/n (called COVID-19).", ""]
    results = {"levels": levels, "models": {}}
    for ck in a.checkpoints:
        pred, classes = predict(ck, inputs)
        name = ck.parent.name if ck.name == "best.safetensors" else ck.stem
        results["models"][name] = r = summarise(pred, classes, ev, a.noisy_source)
        lines += markdown(name, r)
        print(f"{name}: " + ", ".join(f"{c} {100 * r[c]['accuracy']:.1f}%" for c in CONDITIONS), flush=True)
    lines[4:4] = compact(results["models"], a.noisy_source) + [""]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"results-{a.split}.json").write_text(json.dumps(results, indent=1))
    (a.out / f"summary-{a.split}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
