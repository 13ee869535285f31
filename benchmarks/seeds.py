"""Several seeds of two architectures on the same images: mean +- sd of accuracy and of each class's and source's
sensitivity, and an exact McNemar test per seed pair (seed i of A against seed i of B), as issue 14 asks; with two or
more pairs also all pairs at once, image by image: the mean difference with a bootstrap interval over images and a
paired permutation test (per-image differences averaged over seeds, signs flipped at random).

Run: python benchmarks/seeds.py benchmarks/results/training research test
     (reads DIR/CONFIG-ARCH-sN-eval-SPLIT/eval.json for ARCH in covid-densenet, densenet121)
     python benchmarks/seeds.py benchmarks/results/training shipped test -e60
     (a TAG: DIR/CONFIG-ARCH-e60-sN-...; an architecture without runs is left out, and so are the paired tests)
     python benchmarks/seeds.py benchmarks/results/training research test -e60 --plot seeds.png
     (also a figure: each seed's accuracy and per-source sensitivities with 95% Wilson intervals, and issue 14's goals)
     python benchmarks/seeds.py benchmarks/results/training research test --compare covid-densenet-e60 covid-densenet-e60-mixup
     (any two run names without the seed, e.g. one recipe change on one architecture: A and B in that order)
     python benchmarks/seeds.py benchmarks/results/training research test -e60 --seeds 4,5,6
     (only those seeds: e.g. the ones trained on a GPU, whose config says trained_on cuda)
     python benchmarks/seeds.py benchmarks/results/training research test -e60 --by-machine
     (also every run's accuracy grouped by training device, CPU vs GPU, with a Mann-Whitney U test)
     python benchmarks/seeds.py benchmarks/results/training research test --compare A B --only ieee8023:COVID-19
     (the paired tests on a subset of images only: one source, or one class of one source; --without SOURCE leaves a
     source out instead, e.g. sbu for models trained without it; the mean +- sd table stays on all images)
"""
import json
import re
import sys
from pathlib import Path

import numpy as np

from edgecxr.metrics import mcnemar_exact

ARCHS = ("covid-densenet", "densenet121")
SEED_FILTER: set[int] | None = None  # --seeds 4,5,6: only these seeds (e.g. the runs trained on one kind of machine)
ONLY: tuple[str, str | None] | None = None  # --only SOURCE[:CLASS]: paired tests on those images only
WITHOUT: set[str] = set()  # --without SOURCE: paired tests without that source's images


def _kept(p: dict) -> bool:
    if p.get("source") in WITHOUT:
        return False
    return ONLY is None or (p.get("source") == ONLY[0] and ONLY[1] in (None, p["label"]))


def subset_label() -> str:
    """How the paired tests' images are restricted, for their heading ("" when all images are used)."""
    parts = [f"{ONLY[0]}{' ' + ONLY[1] if ONLY[1] else ''} images only"] if ONLY else []
    parts += [f"without {s}" for s in sorted(WITHOUT)]
    return "; ".join(parts)


def runs(root: Path, config: str, arch: str, split: str) -> dict[int, dict]:
    out = {}
    for p in sorted(root.glob(f"{config}-{arch}-s*-eval-{split}/eval.json")):
        m = re.fullmatch(rf"{config}-{arch}-s(\d+)-eval-{split}", p.parent.name)
        if m and (SEED_FILTER is None or int(m.group(1)) in SEED_FILTER):
            out[int(m.group(1))] = json.loads(p.read_text())
    return out


def correct(res: dict) -> tuple[list[str], np.ndarray]:
    preds = sorted((p for p in res["predictions"] if _kept(p)), key=lambda p: p["file"])
    if not preds:
        raise SystemExit(f"no images left after --only / --without ({subset_label()})")
    cls = res["classes"]
    return [p["file"] for p in preds], np.array([int(np.argmax(p["prob"])) == cls.index(p["label"]) for p in preds])


def msd(values: list[float]) -> str:
    v = 100 * np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def summary(root: Path, config: str, split: str, tag: str = "", variants: list[str] | None = None) -> list[str]:
    """Markdown lines: mean +- sd per metric for each variant (by default each architecture with ``tag``), then
    McNemar per seed pair of the first two."""
    variants = variants or [a + tag for a in ARCHS]
    table = {a: runs(root, config, a, split) for a in variants}
    table = {a: r for a, r in table.items() if r}
    if not table:
        raise SystemExit(f"no {config}-NAME-sN-eval-{split}/eval.json under {root} (NAME: {', '.join(variants)})")
    archs = list(table)
    first = next(iter(table[archs[0]].values()))
    rows = [("accuracy", lambda r: r["image"]["accuracy"]), ("macro F1", lambda r: r["image"]["macro_f1"])]
    rows += [(f"{c} sensitivity", lambda r, c=c: r["image"]["per_class"][c]["sensitivity"]) for c in first["classes"]]
    for src, v in sorted(first["per_source"].items()):
        for c in v["sensitivity"]:
            rows.append((f"{c} sensitivity, {src}", lambda r, s=src, c=c: r["per_source"][s]["sensitivity"][c]["value"]))
    out = [f"{config} configuration, dev {split} ({first['n_images']} images): mean ± sd over seeds (%), each seed in brackets", "",
           "| metric | " + " | ".join(f"{a} (seeds {', '.join(map(str, sorted(table[a])))})" for a in archs) + " |",
           "|---|" + "---|" * len(archs)]
    for name, get in rows:
        cells = []
        for a in archs:
            vals = [get(table[a][s]) for s in sorted(table[a])]
            cells.append(f"{msd(vals)} ({', '.join(f'{100 * v:.1f}' for v in vals)})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(archs) < 2:
        return out
    a, b = archs[:2]
    sub = subset_label()
    out += ["", f"Paired per seed (A = {a}, B = {b}; same data and seed{'; ' + sub if sub else ''}):", "",
            "| seed | accuracy A / B | A right only / B right only | exact McNemar p |", "|---|---|---|---|"]
    diffs = []
    for t in pairs(root, config, split, a, b):
        d = t["diff"]
        out.append(f"| {t['seed']} | {t['acc_a']:.1f} / {t['acc_b']:.1f} | {int((d > 0).sum())} / {int((d < 0).sum())} | "
                   f"{t['p']:.3g} |")
        diffs.append(d)
    if len(diffs) > 1:
        try:
            p = pooled(np.mean(diffs, axis=0))
        except ImportError:
            return out + ["", "(all pairs together: needs scipy, e.g. pip install -e '.[openvino]' or pip install scipy)"]
        out += ["", f"All {len(diffs)} seed pairs together, image by image (each image's share of seeds A gets right minus "
                f"B's): A - B = **{p['mean']:+.1f} points**, 95% bootstrap interval over images [{p['lo']:+.1f}, "
                f"{p['hi']:+.1f}]; paired permutation test (sign flips per image) p = {p['p_value']:.3g}"]
    return out


def pairs(root: Path, config: str, split: str, a: str, b: str) -> list[dict]:
    """Per common seed of runs ``a`` and ``b``: both accuracies (%), the exact McNemar p, and per-image differences."""
    ta, tb = runs(root, config, a, split), runs(root, config, b, split)
    out = []
    for s in sorted(set(ta) & set(tb)):
        (fa, ca), (fb, cb) = correct(ta[s]), correct(tb[s])
        if fa != fb:
            raise SystemExit(f"seed {s}: the two evaluations hold different images")
        out.append({"seed": s, "acc_a": 100 * ca.mean(), "acc_b": 100 * cb.mean(),
                    "p": mcnemar_exact(ca, cb)["p_value"], "diff": ca.astype(float) - cb.astype(float)})
    return out


def verdict(root: Path, config: str = "research", tag: str = "-e60") -> str:
    """One sentence on Covid-DenseNet vs DenseNet121 over seeds: the test means, the seed pairs at p < 0.05 on test and
    val, how val's point estimates split, and all test pairs image by image (for the model card)."""
    a, b = (x + tag for x in ARCHS)
    test, val = pairs(root, config, "test", a, b), pairs(root, config, "val", a, b)
    if len(test) < 2:
        return f"{len(test)} seed pair(s): too few to compare"
    ma, mb = np.mean([t["acc_a"] for t in test]), np.mean([t["acc_b"] for t in test])
    sig = sum(t["p"] < 0.05 for t in test + val)
    ahead = [int(np.sign(v["acc_a"] - v["acc_b"])) for v in val]
    p = pooled(np.mean([t["diff"] for t in test], axis=0))
    return (f"{len(test)} seed pairs; dev test means {abs(ma - mb):.1f} points apart ({ma:.1f}% Covid-DenseNet, {mb:.1f}% "
            f"DenseNet121); {'no' if sig == 0 else sig} seed pair{'s' if sig != 1 else ''} at p < 0.05 on test or val; on "
            f"val Covid-DenseNet ahead in {ahead.count(1)}, DenseNet121 in {ahead.count(-1)}, tied in {ahead.count(0)}; "
            f"all test pairs image by image {p['mean']:+.1f} points [{p['lo']:+.1f}, {p['hi']:+.1f}] (p = {p['p_value']:.2g})")


def by_machine(root: Path, config: str, split: str, tag: str = "") -> list[str]:
    """Accuracy of every run of both architectures grouped by where it was trained (each config's trained_on; runs
    from before it was recorded count as CPU), with a Mann-Whitney U test between the groups."""
    from scipy import stats

    groups: dict[str, list[float]] = {}
    for arch in ARCHS:
        for seed, res in runs(root, config, arch + tag, split).items():
            cfg = root / f"{config}-{arch}{tag}-s{seed}-config.json"
            on = json.loads(cfg.read_text()).get("trained_on", {}) if cfg.is_file() else {}
            groups.setdefault(on.get("device", "cpu"), []).append(100 * res["image"]["accuracy"])
    lines = [f"{config}, dev {split}, accuracy by training device: " + "; ".join(
        f"{dev} {msd(np.array(v) / 100)}% over {len(v)} runs" for dev, v in sorted(groups.items()))]
    if len(groups) == 2:
        a, b = groups.values()
        lines.append(f"Mann-Whitney U p = {stats.mannwhitneyu(a, b).pvalue:.2g}")
    return lines


def pooled(d: np.ndarray) -> dict:
    """Mean of per-image differences (in points) with a 95% bootstrap interval over images and a two-sided sign-flip
    permutation p (scipy.stats; scipy comes with the openvino extra through NNCF)."""
    from scipy import stats

    perm = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True, n_resamples=100_000,
                                  random_state=0)
    if np.ptp(d) == 0:  # every image alike: no spread to resample (scipy's BCa interval is undefined there)
        return {"mean": 100 * d.mean(), "lo": 100 * d.mean(), "hi": 100 * d.mean(), "p_value": float(perm.pvalue)}
    ci = stats.bootstrap((d,), np.mean, vectorized=True, confidence_level=0.95, n_resamples=10_000,
                         random_state=0).confidence_interval
    return {"mean": 100 * d.mean(), "lo": 100 * ci.low, "hi": 100 * ci.high, "p_value": float(perm.pvalue)}


def plot(root: Path, config: str, split: str, tag: str, out: Path, variants: list[str] | None = None) -> None:
    """Each seed as a point with its 95% Wilson interval, per architecture: accuracy, then each class's sensitivity
    per source; dashed lines at issue 14's research goals (85% accuracy and COVID-19 sensitivity, 80% Normal and
    Pneumonia)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecxr.metrics import wilson_ci

    variants = variants or [a + tag for a in ARCHS]
    table = {a: r for a in variants if (r := runs(root, config, a, split))}
    first = next(iter(next(iter(table.values())).values()))
    metrics = [("accuracy", None, None, 0.85)]
    metrics += [(f"{c}\n{src}", src, c, 0.85 if c == "COVID-19" else 0.80)
                for src, v in sorted(first["per_source"].items()) for c in v["sensitivity"]]

    def kn(r: dict, src: str | None, c: str | None) -> tuple[int, int]:
        if src is None:
            _, ok = correct(r)
            return int(ok.sum()), len(ok)
        v = r["per_source"][src]["sensitivity"][c]
        return v["k"], v["n"]

    fig, ax = plt.subplots(figsize=(1.3 * len(metrics) + 2, 4.2))
    colours = dict(zip(table, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for j, (name, src, c, goal) in enumerate(metrics):
        ax.hlines(goal, j - 0.45, j + 0.45, colors="grey", linestyles="dashed", linewidth=1)
        for i, (a, res) in enumerate(table.items()):
            seeds = sorted(res)
            vals = []
            for q, sd in enumerate(seeds):
                k, n = kn(res[sd], src, c)
                lo, hi = wilson_ci(k, n)
                x = j + (i - 0.5) * 0.4 + (q - (len(seeds) - 1) / 2) * 0.08
                ax.errorbar(x, k / n, yerr=[[k / n - lo], [hi - k / n]], fmt="o", ms=4, color=colours[a], alpha=0.8,
                            capsize=2, label=f"{a} (seeds {', '.join(map(str, seeds))})" if j == 0 and q == 0 else None)
                vals.append(k / n)
            ax.hlines(np.mean(vals), j + (i - 0.5) * 0.4 - 0.15, j + (i - 0.5) * 0.4 + 0.15, colors=colours[a], linewidth=2.5)
    n = first["n_images"]
    ax.set_xticks(range(len(metrics)), [m[0] + ("" if m[1] is None else " sens.") for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share right (95% Wilson interval per seed; bar = mean)")
    ax.set_title(f"{config} configuration, dev {split} ({n} images): each seed; dashed = issue 14's goal for the class", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    args = sys.argv[1:]
    out = None
    if "--plot" in args:  # parsed by hand: the TAG itself starts with "-" (-e60), which argparse takes for an option
        i = args.index("--plot")
        out, args = Path(args[i + 1]), args[:i] + args[i + 2:]
    global SEED_FILTER, ONLY
    while "--without" in args:
        i = args.index("--without")
        WITHOUT.add(args[i + 1])
        args = args[:i] + args[i + 2:]
    if "--only" in args:
        i = args.index("--only")
        src, _, cls = args[i + 1].partition(":")
        ONLY, args = (src, cls or None), args[:i] + args[i + 2:]
    machine = "--by-machine" in args
    args = [a for a in args if a != "--by-machine"]
    if "--seeds" in args:
        i = args.index("--seeds")
        SEED_FILTER, args = {int(x) for x in args[i + 1].split(",")}, args[:i] + args[i + 2:]
    variants = None
    if "--compare" in args:
        i = args.index("--compare")
        variants, args = args[i + 1 : i + 3], args[:i] + args[i + 3:]
        if len(variants) != 2:
            raise SystemExit(__doc__)
    if len(args) not in (3, 4):
        raise SystemExit(__doc__)
    root, config, split, tag = Path(args[0]), args[1], args[2], (args[3:] or [""])[0]
    print("\n".join(summary(root, config, split, tag, variants)))
    if machine:
        print("\n" + "\n".join(by_machine(root, config, split, tag)))
    if out:
        plot(root, config, split, tag, out, variants)


if __name__ == "__main__":
    main()
