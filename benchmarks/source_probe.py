"""How much of the labels can be read without looking at disease? Simple classifiers on low-level statistics of the
model's 224-px input (grey-level histogram, exposure, sharpness, noise, the film's border band), fitted on the dev
training images, tested on dev test: which **source** an image comes from, and which **class** (issue 14: evaluation
that exposes shortcuts). In this data class is confounded with source, so whatever these statistics reach on the
class task is reachable without any anatomy; a CNN's accuracy is only evidence of more where it goes beyond it.

Also the leave-one-source-out question of `benchmarks/ablation.md` for these statistics: fitted without one
COVID-19 source, how well do they rank that source's COVID-19 test images above the non-COVID-19 ones?

Run: python benchmarks/source_probe.py [--manifest ../shared/cxr/dev/MANIFEST.csv] [--out benchmarks/results/source-probe]
        [--compare 'CONFIG=GLOB' ...]   (CNN runs' eval.json files, {split} for val / test; see `compare`)
Writes OUT/summary.md, OUT/results.json and OUT/features.png. Seconds on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import load_samples
from edgecxr.imaging import load_gray
from edgecxr.metrics import per_source, wilson_ci
from edgecxr.preprocess import resize_policy

sys.path.insert(0, str(Path(__file__).parent))
from operating_points import auc_by_source  # noqa: E402

CLASSES = ["COVID-19", "Normal", "Pneumonia"]
BINS = 16
BAND = 0.1


def high_pass_noise(g: np.ndarray) -> float:
    """Pixel-level noise: the sd of the image minus its 3x3 mean (interior pixels)."""
    blur = (g[:-2, :-2] + g[:-2, 1:-1] + g[:-2, 2:] + g[1:-1, :-2] + g[1:-1, 1:-1] + g[1:-1, 2:]
            + g[2:, :-2] + g[2:, 1:-1] + g[2:, 2:]) / 9
    return float((g[1:-1, 1:-1] - blur).std())


def features(g: np.ndarray) -> np.ndarray:
    """Low-level statistics of one (224, 224) image in [0, 1]; nothing that needs anatomy. Names: `FEATURES`."""
    n, b = g.shape[0], max(1, round(BAND * g.shape[0]))
    hist = np.histogram(g, bins=BINS, range=(0.0, 1.0))[0] / g.size
    centre = g[b:n - b, b:n - b]
    top, bottom, left, right = g[:b], g[n - b:], g[:, :b], g[:, n - b:]
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    gy, gx = np.gradient(g)
    stats = [g.mean(), g.std(), *np.percentile(g, [1, 5, 50, 95, 99]), (g >= 0.98).mean(), (g <= 0.02).mean(),
             centre.mean(), centre.std(), top.mean(), bottom.mean(), left.mean(), right.mean(),
             top.std(), bottom.std(), left.std(), right.std(),
             lap.mean(), np.hypot(gx, gy).mean(), high_pass_noise(g)]
    return np.concatenate([hist, np.asarray(stats, np.float64)])


FEATURES = ([f"hist{i}" for i in range(BINS)]
            + ["mean", "std", "p1", "p5", "p50", "p95", "p99", "white", "black", "centre_mean", "centre_std",
               "top_mean", "bottom_mean", "left_mean", "right_mean", "top_std", "bottom_std", "left_std", "right_std",
               "laplacian", "gradient", "noise"])


def classifiers(trees: int = 500) -> dict:
    """Two standard classifiers: linear (scaled logistic regression) and non-linear (a random forest)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000,
                                                                                      class_weight="balanced")),
            "random forest": RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, class_weight="balanced",
                                                    random_state=0, n_jobs=2)}


def load(manifest: str, size: int = 224) -> tuple[np.ndarray, list]:
    """Every image of the manifest as the model sees it before normalisation (crop policy), as feature rows."""
    samples = load_samples(manifest)
    from rich.progress import track

    rows = [features(resize_policy(load_gray(s.path), size, "crop")) for s in track(samples, description="images")]
    return np.asarray(rows), samples


def _fit(clf, x, y):
    from sklearn.base import clone

    return clone(clf).fit(x, y)


def run(x: np.ndarray, samples: list, trees: int = 500) -> dict:
    """Every task, both configurations, both classifiers (``trees``: the forest's size)."""
    split = np.array([s.split for s in samples])
    src = np.array([s.source or "unknown" for s in samples])
    y = np.array([CLASSES.index(s.label) for s in samples])
    nc = np.array([s.licence_nc for s in samples])
    test = split == "test"
    sources = sorted(set(src))
    out: dict = {"n": {"train": int((split == "train").sum()), "test": int(test.sum())}, "tasks": {}}
    for config, train in (("shipped", (split == "train") & ~nc), ("research", split == "train")):
        for name, clf in classifiers(trees).items():
            key = f"{config} / {name}"
            # source from statistics alone
            m = _fit(clf, x[train], src[train])
            pred = m.predict(x[test])
            src_acc = {s: [int(((pred == s) & (src[test] == s)).sum()), int((src[test] == s).sum())] for s in sources}
            # class from statistics alone; predictions in `edgecxr eval`'s format, for benchmarks/paired.py
            m = _fit(clf, x[train], y[train])
            prob = m.predict_proba(x[test])
            ps = per_source(y[test], prob, CLASSES, list(src[test]))
            k_right = int((prob.argmax(1) == y[test]).sum())
            val = split == "val"
            res = {"source_accuracy": float((pred == src[test]).mean()), "source_found": src_acc,
                   "class_accuracy": k_right / int(test.sum()), "class_ci95": list(wilson_ci(k_right, int(test.sum()))),
                   "val_class_accuracy": float((m.predict(x[val]) == y[val]).mean()),
                   "predictions": {sp: [{"file": str(samples[i].path), "label": samples[i].label, "source": src[i],
                                         "prob": [round(float(v), 6) for v in pr]}
                                        for i, pr in zip(np.flatnonzero(split == sp), m.predict_proba(x[split == sp]))]
                                   for sp in ("val", "test")},
                   "class_found": {s: {c: [v["k"], v["n"]] for c, v in r["sensitivity"].items()} for s, r in ps.items()},
                   "covid_auc": auc_by_source(y[test], prob, list(src[test]), 0), "left_out": {}}
            # one COVID-19 source left out of fitting
            if config == "research":
                for s in sorted(set(src[y == 0])):
                    keep = train & (src != s)
                    p = _fit(clf, x[keep], y[keep]).predict_proba(x[test])
                    hit = (src[test] == s) & (y[test] == 0)
                    res["left_out"][s] = {"found": [int((p[hit].argmax(1) == 0).sum()), int(hit.sum())],
                                          "auc": auc_by_source(y[test], p, list(src[test]), 0)[s]}
            out["tasks"][key] = res
            print(f"{key}: source {100 * res['source_accuracy']:.1f}%, class {100 * res['class_accuracy']:.1f}%",
                  flush=True)
    # which statistics carry the source: the forest's impurity importances on every training image
    forest = _fit(classifiers(trees)["random forest"], x[split == "train"], src[split == "train"])
    order = np.argsort(forest.feature_importances_)[::-1][:8]
    out["top_features_for_source"] = [[FEATURES[i], float(forest.feature_importances_[i])] for i in order]
    return out


def markdown(r: dict, manifest: str) -> str:
    sources = sorted(next(iter(r["tasks"].values()))["source_found"])
    head = ["# Source and class from low-level image statistics (no anatomy)", "",
            f"`python benchmarks/source_probe.py --manifest {manifest}`. {len(FEATURES)} statistics of the model's "
            "224-px input (crop policy, before normalisation): a 16-bin grey-level histogram, percentiles, saturated "
            "and black shares, centre and border-band (10%) means and spreads, Laplacian and gradient energy, "
            f"high-pass noise. Fitted on dev train ({r['n']['train']} images; *shipped*: permissive ones only), "
            f"tested on every dev test image ({r['n']['test']}). Classifiers: scikit-learn's logistic regression "
            "(standardised, class-balanced) and random forest (500 trees, class-balanced, seed 0).", "",
            "## Which source?", "",
            "| fitted on / classifier | accuracy | " + " | ".join(sources) + " |",
            "|---|---|" + "---|" * len(sources)]
    for key, t in r["tasks"].items():
        head.append(f"| {key} | {100 * t['source_accuracy']:.1f}% | "
                    + " | ".join(f"{k}/{n}" for k, n in (t["source_found"][s] for s in sources)) + " |")
    groups = [(s, c) for s in sources for c in CLASSES
              if c in next(iter(r["tasks"].values()))["class_found"].get(s, {})]
    head += ["", "## Which class? (what a CNN must beat to show it reads more than these statistics)", "",
             "| fitted on / classifier | test accuracy [95% CI] (val) | " + " | ".join(f"{s} {c}" for s, c in groups)
             + " | COVID-19 AUC per source |", "|---|---|" + "---|" * (len(groups) + 1)]
    for key, t in r["tasks"].items():
        lo, hi = t["class_ci95"]
        head.append(f"| {key} | {100 * t['class_accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
                    f"(val {100 * t['val_class_accuracy']:.1f}%) | "
                    + " | ".join("{}/{}".format(*t["class_found"][s][c]) for s, c in groups) + " | "
                    + ", ".join(f"{s} {100 * v:.1f}" for s, v in t["covid_auc"].items()) + " |")
    head += ["", "## One COVID-19 source left out of fitting (research images)", "",
             "| classifier | " + " | ".join(f"without {s}: its COVID-19 found, AUC" for s in
                                             next(t for t in r["tasks"].values() if t["left_out"])["left_out"]) + " |",
             "|---|" + "---|" * len(next(t for t in r["tasks"].values() if t["left_out"])["left_out"])]
    for key, t in r["tasks"].items():
        if t["left_out"]:
            head.append(f"| {key.split(' / ')[1]} | " + " | ".join(
                f"{v['found'][0]}/{v['found'][1]}, {100 * v['auc']:.1f}" for v in t["left_out"].values()) + " |")
    head += ["", "Statistics that tell the source most (random forest on every training image, impurity importance): "
             + ", ".join(f"{n} {v:.3f}" for n, v in r["top_features_for_source"]) + "."]
    return "\n".join(head) + "\n"


def compare(r: dict, specs: list[str]) -> list[str]:
    """The statistics' class predictions against CNN runs' `edgecxr eval` files on the same images, per split:
    accuracy of each, how often their argmax agree, and the exact McNemar test per run. A spec is
    CONFIG=GLOB, GLOB naming eval.json files with {split} for val / test."""
    import glob

    from edgecxr.metrics import mcnemar_exact

    lines = ["| CNN runs (fitted on) | split | classifier | CNN accuracy | statistics' accuracy | argmax agreement | "
             "McNemar p per run |", "|---|---|---|---|---|---|---|"]
    for spec in specs:
        config, _, pattern = spec.partition("=")
        for split in ("val", "test"):
            paths = sorted(glob.glob(pattern.format(split=split)))
            if not paths:
                raise SystemExit(f"--compare {spec}: no file matches for split {split}")
            runs = [{p["file"]: p for p in json.loads(Path(path).read_text())["predictions"]} for path in paths]
            for key, t in r["tasks"].items():
                if not key.startswith(config + " / "):
                    continue
                mine = {p["file"]: p for p in t["predictions"][split]}
                acc, own, agree, ps = [], [], [], []
                for path, theirs in zip(paths, runs):
                    if set(theirs) != set(mine):
                        raise SystemExit(f"{path}: not the same {split} images as the manifest's")
                    files = sorted(mine)
                    y = np.array([CLASSES.index(mine[f]["label"]) for f in files])
                    a = np.array([np.argmax(theirs[f]["prob"]) for f in files])
                    b = np.array([np.argmax(mine[f]["prob"]) for f in files])
                    acc.append((a == y).mean())
                    own.append((b == y).mean())
                    agree.append((a == b).mean())
                    ps.append(mcnemar_exact(a == y, b == y)["p_value"])
                lines.append(f"| {Path(pattern).parent.name} ({config}; {len(paths)} runs) | {split} | {key.split(' / ')[1]} | "
                             f"{100 * np.mean(acc):.1f}% | {100 * np.mean(own):.1f}% | {100 * np.mean(agree):.1f}% | "
                             + ", ".join(f"{p:.2g}" for p in ps) + " |")
    return lines


def plot(x: np.ndarray, samples: list, path: Path) -> None:
    """Two of the statistics per image, coloured by source and shaped by class: the confound at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src = np.array([s.source or "unknown" for s in samples])
    lab = np.array([s.label for s in samples])
    i, j = FEATURES.index("noise"), FEATURES.index("p50")
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for s in sorted(set(src)):
        for c, mk in zip(CLASSES, "o^s"):
            m = (src == s) & (lab == c)
            if m.any():
                ax.scatter(x[m, i], x[m, j], s=10, marker=mk, alpha=0.6, label=f"{s} {c} ({m.sum()})")
    ax.set_xscale("log")
    ax.set_xlabel("high-pass noise (std of image - 3x3 mean)")
    ax.set_ylabel("median grey level")
    ax.set_title("dev images, all splits: two low-level statistics by source and class", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="../shared/cxr/dev/MANIFEST.csv")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/source-probe"))
    ap.add_argument("--compare", action="append", default=[], metavar="CONFIG=GLOB",
                    help="CNN runs to compare with, e.g. 'shipped=benchmarks/results/training/"
                         "shipped-covid-densenet-e60-s1-eval-{split}/eval.json' (CONFIG: shipped or research)")
    a = ap.parse_args()
    x, samples = load(a.manifest)
    r = run(x, samples)
    extra = compare(r, a.compare) if a.compare else []
    a.out.mkdir(parents=True, exist_ok=True)
    for key, t in r["tasks"].items():  # one `edgecxr eval`-style file per fit and split: benchmarks/paired.py reads them
        for sp, preds in t.pop("predictions").items():
            d = a.out / f"{key.replace(' / ', '-').replace(' ', '-')}-eval-{sp}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "eval.json").write_text(json.dumps({"classes": CLASSES, "predictions": preds}, indent=0))
    (a.out / "results.json").write_text(json.dumps(r, indent=1))
    md = markdown(r, a.manifest)
    if extra:
        md += ("\n## Against CNNs on the same images\n\n`--compare " + " --compare ".join(a.compare) + "`\n\n"
               + "\n".join(extra) + "\n")
    (a.out / "summary.md").write_text(md)
    plot(x, samples, a.out / "features.png")
    print(md)


if __name__ == "__main__":
    main()
