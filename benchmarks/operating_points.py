"""Issue 14's research goal at an operating point instead of the argmax: each research run's COVID-19 threshold and
temperature fitted on its own val predictions by the rule the shipped model uses (`edgecxr calibrate`: temperature by
val NLL, then the highest COVID-19 threshold with val sensitivity >= the target, lowered until every kept val positive
lies `--margin` log-odds above it; every val image, non-commercial ones included), applied unchanged to its test
predictions. For the shipped seed it gives the shipped model's own temperature and threshold. Reports, mean +- sd over
seeds, test accuracy and per-class / per-source sensitivities at the argmax and at the operating point, beside the
goal; the two architectures' seed pairs compared there; and an upper bound on what any prior shift could reach.

Run: python benchmarks/operating_points.py benchmarks/results/training research --tag=-e60
     (reads DIR/CONFIG-ARCH-TAG-sN-eval-{val,test}/eval.json; the eval files keep every image's probabilities)
     python benchmarks/operating_points.py benchmarks/results/training research --tag=-e60 --target 0.85 --margin 0
     python benchmarks/operating_points.py benchmarks/results/training shipped --tag=-e60 \
         --permissive-test ../shared/cxr/dev/MANIFEST.csv   (the shipped runs, reported on the permissive 109)
     python benchmarks/operating_points.py ... --out benchmarks/results/operating-points-research-e60.md

The runs' eval probabilities are plain softmax (no temperature is fitted in training), so log(p) serves as the
logits up to a per-image constant, which softmax ignores.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

from edgecxr.metrics import auc_binary, per_source, point_metrics
from edgecxr.runtime.batching import softmax
from edgecxr.runtime.operating_point import findings
from edgecxr.train.calibrate import fit_operating_point, fit_temperature

ARCHS = ("covid-densenet", "densenet121")
GOAL = {"accuracy": 0.85, "COVID-19 per source": 0.85, "Normal": 0.80, "Pneumonia": 0.80}


def non_commercial(manifest: Path) -> set[str]:
    """File names (no folder) of the manifest's images whose licence forbids commercial use."""
    with manifest.open(newline="") as f:
        return {Path(r["file"]).name for r in csv.DictReader(f) if r["non_commercial_only"].strip().lower() == "yes"}


def load(path: Path, drop: set[str] = frozenset()) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    d = json.loads(path.read_text())
    classes = d["classes"]
    preds = sorted((p for p in d["predictions"] if Path(p["file"]).name not in drop), key=lambda p: p["file"])
    y = np.array([classes.index(p["label"]) for p in preds])
    prob = np.array([p["prob"] for p in preds], dtype=np.float64)
    return classes, y, prob, [p.get("source") or "?" for p in preds]


def metrics(pred: np.ndarray, y: np.ndarray, src: list[str], classes: list[str]) -> dict[str, float]:
    """Accuracy, each class's sensitivity, COVID-19 sensitivity per source (`edgecxr.metrics`), and the other classes'
    share called COVID-19 (what a lower threshold costs)."""
    onehot = np.eye(len(classes))[pred]
    pm, ps = point_metrics(y, onehot, classes), per_source(y, onehot, classes, src)
    out = {"accuracy": pm["accuracy"]}
    out.update({f"{c} sensitivity": v["sensitivity"] for c, v in pm["per_class"].items() if v["support"]})
    out.update({f"COVID-19 sensitivity {s}": v["sensitivity"]["COVID-19"]["value"] for s, v in ps.items()
                if "COVID-19" in v["sensitivity"]})
    out["non-COVID-19 called COVID-19"] = 1.0 - pm["per_class"]["COVID-19"]["specificity"]
    return out


def auc_by_source(y: np.ndarray, prob: np.ndarray, src: list[str], k: int) -> dict[str, float]:
    """For each source with COVID-19 images: the AUC of its COVID-19 images against every non-COVID-19 image (0.5: the
    COVID-19 score tells that source's COVID-19 from the rest no better than chance)."""
    src_a, neg = np.asarray(src), y != k
    return {str(s): auc_binary(y[m] == k, prob[m, k]) for s in sorted(set(src_a[y == k]))
            for m in [neg | ((y == k) & (src_a == s))]}


def one_run(val: Path, test: Path, target: float, margin: float, drop: set[str] = frozenset(),
            fit_without: set[str] = frozenset()) -> tuple[dict, dict, dict, np.ndarray]:
    """Test metrics at the argmax and at the val-fitted operating point, the fit, and each test image's correctness
    at the operating point (sorted by file name); test images named in ``drop`` are left out. The fit uses every
    val image, as `edgecxr calibrate` does, but those of the sources in ``fit_without`` (a source left out of
    training: an unseen hospital must not set the threshold it is then tested at)."""
    classes, yv, pv, sv = load(val)
    keep = np.array([s not in fit_without for s in sv])
    yv, pv = yv[keep], pv[keep]
    _, yt, pt, st = load(test, drop)
    t = fit_temperature(np.log(pv + 1e-12), yv)
    op = fit_operating_point(softmax(np.log(pv + 1e-12) / t), yv, classes, target_sensitivity=target, margin=margin)
    pred = pt.argmax(1)
    if "threshold" in op:  # else the target is out of reach on val: no operating point, the argmax stands
        pred = findings(np.log(pt + 1e-12), classes, {**op, "temperature": t})  # as the runtime computes it
    k = classes.index("COVID-19")
    fit = {"temperature": t, "val_auc": auc_binary(yv == k, pv[:, k]), "test_auc": auc_binary(yt == k, pt[:, k]),
           "test_auc_by_source": auc_by_source(yt, pt, st, k), "test_offset_bound": offset_bound(yt, pt), **op}
    return metrics(pt.argmax(1), yt, st, classes), metrics(pred, yt, st, classes), fit, pred == yt


def offset_bound(y: np.ndarray, prob: np.ndarray, span: float = 3.0, steps: int = 61) -> float:
    """The best accuracy any per-class offsets of the log-probabilities reach on these images (two classes shifted
    against the third on a grid over +-``span``), fitted on the very images scored: on test, an upper bound for
    every prior shift (per-class offsets) chosen on val, not a result. Three classes."""
    logp, grid = np.log(prob + 1e-12), np.linspace(-span, span, steps)
    if logp.shape[1] != 3:
        raise ValueError("offset_bound expects three classes")
    off = np.zeros((steps, steps, 3))
    off[..., 0], off[..., 2] = grid[:, None], grid[None, :]  # class 1 is the reference
    pred = (logp[None, None] + off[:, :, None, :]).argmax(-1)
    return float((pred == y).mean(-1).max())


def arch_runs(root: Path, name: str, target: float, margin: float, drop: set[str] = frozenset(),
              fit_without: set[str] = frozenset()) -> list[tuple]:
    """(seed, argmax metrics, operating-point metrics, fit, correct) for each seed of run NAME with val and test."""
    rows = []
    for v in sorted(root.glob(f"{name}-s*-eval-val/eval.json")):
        m = re.fullmatch(rf"{re.escape(name)}-s(\d+)-eval-val", v.parent.name)
        t = v.parent.parent / f"{name}-s{m.group(1)}-eval-test" / "eval.json" if m else None
        if t and t.exists():
            rows.append((int(m.group(1)), *one_run(v, t, target, margin, drop, fit_without)))
    return rows


def compare(by_arch: dict[str, list[tuple]]) -> dict | None:
    """The two architectures' seed pairs at the operating point: test accuracy image by image (seeds.pooled), exact
    McNemar per pair, and per pair COVID-19 AUC on val and test and val accuracy at the operating point (Wilcoxon
    signed-rank from 5 pairs on)."""
    correct = {a: {r[0]: r[4] for r in by_arch.get(a, [])} for a in ARCHS}
    fits = {a: {r[0]: r[3] for r in by_arch.get(a, [])} for a in ARCHS}
    common = sorted(set(correct[ARCHS[0]]) & set(correct[ARCHS[1]]))
    if not common:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    from seeds import pooled

    from edgecxr.metrics import mcnemar_exact

    a_, b_ = (correct[x] for x in ARCHS)
    out = {"seeds": common, "accuracy": pooled(np.mean([a_[s].astype(float) - b_[s].astype(float) for s in common], 0)),
           "mcnemar": [mcnemar_exact(a_[s], b_[s])["p_value"] for s in common], "per_pair": {}}
    for key, name in (("val_auc", "COVID-19 AUC on val"), ("test_auc", "COVID-19 AUC on test"),
                      ("val_accuracy", "val accuracy at the operating point (where it was fitted)")):
        d = np.array([fits[ARCHS[0]][s][key] - fits[ARCHS[1]][s][key] for s in common])
        out["per_pair"][name] = {"mean": 100 * d.mean(), "lower": int((d < 0).sum()), "n": len(d), "p_value": None}
        if len(common) >= 5:
            from scipy.stats import wilcoxon

            out["per_pair"][name]["p_value"] = float(wilcoxon(d).pvalue)
    return out


def _sd(x: np.ndarray) -> str:
    return f" ± {x.std(ddof=1):.1f}" if len(x) > 1 else ""


def report(name: str, rows: list[tuple]) -> list[str]:
    n = len(rows[0][4])
    lines = [f"## {name}: {len(rows)} seeds ({', '.join(str(r[0]) for r in rows)}), dev test ({n} images)", "",
             "| seed | temperature | COVID-19 threshold | val COVID-19 sensitivity / specificity at it "
             "| test accuracy: argmax -> operating point |", "|---|---|---|---|---|"]
    for s, am, at, op, _ in rows:
        acc = f"{100 * am['accuracy']:.1f} -> {100 * at['accuracy']:.1f}%"
        if "threshold" in op:
            lines.append(f"| {s} | {op['temperature']:.2f} | {op['threshold']:.3f} | "
                         f"{100 * op['val_sensitivity']:.1f} / {100 * op['val_specificity']:.1f}% | {acc} |")
        else:
            lines.append(f"| {s} | {op['temperature']:.2f} | none (target not reached on val) | | {acc} |")
    auc = {sp: 100 * np.array([r[3][f"{sp}_auc"] for r in rows]) for sp in ("val", "test")}
    lines += ["", "COVID-19 against the rest, AUC (mean ± sd over seeds; the ranking every threshold is drawn from): "
              + ", ".join(f"{sp} {v.mean():.1f}{_sd(v)}" for sp, v in auc.items()) + "; on test, each source's COVID-19 "
              "images against every non-COVID-19 image: " + ", ".join(
                  f"{src} {v.mean():.1f}{_sd(v)}" for src in rows[0][3]["test_auc_by_source"]
                  for v in [100 * np.array([r[3]["test_auc_by_source"][src] for r in rows])]) + ".",
              "", "| test metric (mean ± sd over seeds) | argmax | operating point |", "|---|---|---|"]
    for k in rows[0][1]:
        am = 100 * np.array([r[1][k] for r in rows if k in r[1]])
        op = 100 * np.array([r[2][k] for r in rows if k in r[2]])
        lines.append(f"| {k} | {am.mean():.1f}{_sd(am)} | {op.mean():.1f}{_sd(op)} |")
    b = 100 * np.array([r[3]["test_offset_bound"] for r in rows])
    lines += ["", "Upper bound, not a result: the best test accuracy any per-class offsets of the log-probabilities "
              "reach (a grid of ±3 in steps of 0.1) when fitted on the test images themselves: "
              f"{b.mean():.1f}{_sd(b)} (max {b.max():.1f}); no per-class offset (prior shift) chosen on val "
              "can pass it."]
    return lines + [""]


def comparison_lines(c: dict) -> list[str]:
    r, seeds = c["accuracy"], ", ".join(map(str, c["seeds"]))
    lines = [f"Test accuracy at the operating point, {ARCHS[0]} - {ARCHS[1]}, seeds {seeds} paired image by image: "
             f"**{r['mean']:+.1f} points [{r['lo']:+.1f}, {r['hi']:+.1f}]** (sign-flip permutation p = "
             f"{r['p_value']:.2g}); exact McNemar per seed pair: p = {', '.join(f'{p:.2g}' for p in c['mcnemar'])}."]
    for name, d in c["per_pair"].items():
        test = f" (Wilcoxon signed-rank p = {d['p_value']:.2g})" if d["p_value"] is not None else ""
        lines.append(f"{name[0].upper() + name[1:]}, {ARCHS[0]} - {ARCHS[1]} per seed pair: {d['mean']:+.1f} points, "
                     f"lower in {d['lower']} of {d['n']} pairs{test}.")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("config", choices=("research", "shipped"))
    ap.add_argument("--tag", default="", help="run-name tag, e.g. --tag=-e60 (the = is needed for a leading dash)")
    ap.add_argument("--target", type=float, default=0.95, help="val COVID-19 sensitivity to reach (default 0.95)")
    ap.add_argument("--margin", type=float, default=0.15, help="log-odds room below every kept val positive (0.15)")
    ap.add_argument("--permissive-test", type=Path, metavar="MANIFEST",
                    help="report on the permissive test images only (the shipped goal's 109; the manifest says which "
                         "are non-commercial); the fit still uses every val image, as `edgecxr calibrate` does")
    ap.add_argument("--fit-without", action="append", default=[], metavar="SOURCE",
                    help="leave this source's val images out of the fit (runs trained without it: --tag=-e60-nosbu "
                         "--fit-without sbu); test still reports it")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    drop = non_commercial(a.permissive_test) if a.permissive_test else set()

    lines = [f"# python benchmarks/operating_points.py {a.root} {a.config} --tag={a.tag} --target {a.target} "
             f"--margin {a.margin}" + (f" --permissive-test {a.permissive_test}" if a.permissive_test else "")
             + "".join(f" --fit-without {x}" for x in a.fit_without), ""]
    by_arch = {}
    for arch in ARCHS:
        name = f"{a.config}-{arch}{a.tag}"
        rows = arch_runs(a.root, name, a.target, a.margin, drop, set(a.fit_without))
        if rows:
            by_arch[arch] = rows
            lines += report(name, rows)
    if not by_arch:
        raise SystemExit(f"no {a.config}-ARCH{a.tag}-sN-eval-val and -eval-test pairs under {a.root}")
    c = compare(by_arch)
    if c:
        lines += comparison_lines(c)
    goal = ", ".join(f"{k} >= {100 * v:.0f}%" for k, v in GOAL.items())
    lines += [f"Issue 14's research goal (mean over seeds, dev test): {goal}.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
