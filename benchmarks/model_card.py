"""Write edgecxr/weights/MODEL_CARD.md from `edgecxr eval` results (eval.json) of several models on the
same dev test images, reported per source, on all images and on the permissive-licence subset.

Usage: python benchmarks/model_card.py [SHIPPED=runs/x/eval-test/eval.json [LABEL=path ...]]
The first is the shipped model; the others are compared with it (paired exact McNemar test). Without arguments:
the recorded results in DEFAULT_RUNS (those that exist), plus the multi-seed research comparison of
`benchmarks/seeds.py`. Needs ../shared/cxr/dev/MANIFEST.csv (licence flags).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np

from edgecxr.metrics import mcnemar_exact, per_source, point_metrics, wilson_ci

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import ARCHS, runs as seed_runs, summary as seeds_summary, verdict  # noqa: E402
from source_probe import FEATURES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "benchmarks" / "results" / "training"
DEFAULT_RUNS = [
    ("shipped (strong recipe, 60 epochs, seed 1, AMD EPYC; 76fa283b)", ROOT / "benchmarks/results/shipped-eval-test/eval.json"),
    ("previous shipped model (60 epochs, seed 0, AMX Xeon; b0767063)", ROOT / "benchmarks/results/shipped-b0767063-eval-test/eval.json"),
    ("previous shipped model (30 epochs, fee380fb)", ROOT / "benchmarks/results/shipped-fee380fb-eval-test/eval.json"),
    ("60 epochs, seed 0, AMD EPYC (checkpoint lost, never shipped)", TRAINING / "shipped-covid-densenet-e60-s0-eval-test/eval.json"),
    ("60 epochs, seed 2, AMD EPYC (never shipped: val macro-F1 0.783 < 0.797)", TRAINING / "shipped-covid-densenet-e60-s2-eval-test/eval.json"),
    ("60 epochs, seed 3, AMD EPYC, 2026-12-04 (never shipped: val macro-F1 0.7973 vs the shipped seed's 0.7969, a tie)",
     TRAINING / "shipped-covid-densenet-e60-s3-eval-test/eval.json"),
    ("the shipped recipe with `AUG=robust` (border and patch erasing; seed 1, AMD EPYC; never shipped)",
     TRAINING / "shipped-covid-densenet-e60-robust-s1-eval-test/eval.json"),
    ("plain DenseNet121, the shipped recipe (60 epochs, seed 0, AMD EPYC; never shipped)",
     TRAINING / "shipped-densenet121-e60-s0-eval-test/eval.json"),
    ("previous shipped model (14 ep, light recipe, no Stony Brook)", ROOT / "benchmarks/results/old-shipped-eval-test-all/eval.json"),
    ("research, seed 0 (all dev training images incl. non-commercial; never shipped)",
     TRAINING / "research-covid-densenet-s0-eval-test/eval.json"),
    ("research, 50% of the training patients (seed 0; never shipped)", TRAINING / "research-covid-densenet-f50-s0-eval-test/eval.json"),
    ("research, 25% of the training patients (seed 0; never shipped)", TRAINING / "research-covid-densenet-f25-s0-eval-test/eval.json"),
    ("research, unbalanced sampling (seed 0; never shipped)", TRAINING / "research-covid-densenet-unbal-s0-eval-test/eval.json"),
    ("research, 60 epochs, seed 0 (never shipped)", TRAINING / "research-covid-densenet-e60-s0-eval-test/eval.json"),
    ("research, 60 epochs, 50% of the training patients (seed 0; never shipped)",
     TRAINING / "research-covid-densenet-e60-f50-s0-eval-test/eval.json"),
    ("research, 60 epochs, 25% of the training patients (seed 0; never shipped)",
     TRAINING / "research-covid-densenet-e60-f25-s0-eval-test/eval.json"),
    ("research, 60 epochs, unbalanced sampling (seed 0; never shipped)",
     TRAINING / "research-covid-densenet-e60-unbal-s0-eval-test/eval.json"),
]
PROBE = ROOT / "benchmarks" / "results" / "shortcut-probe"
PROBE_RUNS = [("shipped (76fa283b)", "covid-densenet-cxr3"),
              ("the shipped recipe with `AUG=robust` (seed 1; never shipped)", "shipped-covid-densenet-e60-robust-s1")]
OUT = ROOT / "edgecxr" / "weights" / "MODEL_CARD.md"
MANIFEST = ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"


def shortcut_section(split: str = "test") -> str:
    """The shortcut probe's table (benchmarks/shortcut_probe.py) for the shipped model and its comparisons."""
    found = [(label, json.loads(f.read_text())) for label, name in PROBE_RUNS
             if (f := PROBE / f"{name}-{split}.json").is_file()]
    if not found:
        return "(not recorded: `python benchmarks/shortcut_probe.py edgecxr/weights/covid-densenet-cxr3.safetensors`)"
    groups = list(found[0][1]["groups"])
    lines = ["| model | input | all % | " + " | ".join(g.replace("/", " ") for g in groups) + " |",
             "|---|---|---|" + "---|" * len(groups)]
    for label, d in found:
        for m, r in d["masks"].items():
            lines.append(f"| {label} | {m} | {100 * r['accuracy']:.1f} | "
                         + " | ".join(f"{r['right'][g]}/{d['groups'][g]}" for g in groups) + " |")
    band = found[0][1]["band"]
    return "\n".join(lines) + f"""

Dev {split} ({len(found[0][1]["predictions"])} images), k/n right per source and class. Inputs: *whole* as the runtime sees
it; *zoom* the central {100 - 200 * band:.0f}% square resized to the whole input (a 1.25x zoom, inside what training's
augmentation draws); *no-border* the outer {100 * band:.0f}% band blanked to the image's mean grey; *lungs-out* only
that band kept; *blank* all mean grey. `python benchmarks/shortcut_probe.py CHECKPOINT --split {split}`; every model
measured so far, plots and val: `benchmarks/results/shortcut-probe/`, discussion in `benchmarks/ablation.md`."""


SOURCE_PROBE = ROOT / "benchmarks" / "results" / "source-probe"
NOISE_PROBE = ROOT / "benchmarks" / "results" / "noise-probe" / "results-val+test.json"
NOISE_PROBE_GRAIN = ROOT / "benchmarks" / "results" / "noise-probe-grain" / "results-val+test.json"


def statistics_section(shipped: dict, shipped_name: str = "covid-densenet-cxr3") -> str:
    """What low-level statistics of the input read without anatomy (benchmarks/source_probe.py), against the shipped
    model on the same test images, and what the shipped model makes of Stony Brook's pixel noise
    (benchmarks/noise_probe.py). Empty where those results are not recorded."""
    parts = []
    res_path = SOURCE_PROBE / "results.json"
    if res_path.is_file():
        res = json.loads(res_path.read_text())["tasks"]
        _, ys, ps = _arrays(shipped)
        cells = []
        for clf in ("logistic regression", "random forest"):
            t = res[f"shipped / {clf}"]
            probe = json.loads((SOURCE_PROBE / f"shipped-{clf.replace(' ', '-')}-eval-test/eval.json").read_text())
            _, y2, p2 = _arrays(probe)
            if not np.array_equal(ys, y2):
                raise SystemExit("source probe and shipped evaluation are not on the same test images")
            p = mcnemar_exact(ps.argmax(1) == ys, p2.argmax(1) == y2)["p_value"]
            cells.append(f"a {clf} {100 * t['class_accuracy']:.1f}% (McNemar against the shipped model p = {p:.2g}; "
                         f"val {100 * t['val_class_accuracy']:.1f}%)")
        src = [100 * res[f"{c} / {k}"]["source_accuracy"] for c in ("shipped", "research")
               for k in ("logistic regression", "random forest")]
        sbu = [100 * res[f"research / {k}"]["left_out"]["sbu"]["auc"] for k in ("logistic regression", "random forest")
               if "sbu" in res[f"research / {k}"]["left_out"]]
        parts.append(
            f"{len(FEATURES)} numbers per image that need no anatomy (grey-level histogram, exposure, border bands, "
            "sharpness, pixel noise of the model's 224-px input; `python benchmarks/source_probe.py`) tell which "
            f"source an image comes from for {min(src):.0f}-{max(src):.0f}% of the dev test images, and, fitted on the "
            f"shipped configuration's training images, its class: {cells[0]}, {cells[1]}; the shipped model "
            f"{100 * np.mean(ps.argmax(1) == ys):.1f}%. **On this data, accuracy is no evidence that a model reads "
            "disease**: statistics a radiologist would not call findings reach the same." + (
                f" Fitted without Stony Brook, they still rank its COVID-19 test images above the non-COVID-19 ones "
                f"(AUC {min(sbu):.0f}-{max(sbu):.0f}), better than any CNN trained without it (table above)." if sbu else ""))
    if NOISE_PROBE.is_file():
        nz = json.loads(NOISE_PROBE.read_text())
        r, lv = nz["models"].get(shipped_name), nz["levels"]
        if r:
            def cnt(cond, key):
                k, n = r[cond][key]
                return f"{k}/{n}"
            others = [m for name, m in nz["models"].items() if name != shipped_name and "nosbu" not in name]
            found = _pooled(others, "whole", "noisy_covid_found")[0]
            lost = found - _pooled(others, "smoothed", "noisy_covid_found")[0]
            o_found = _pooled(others, "whole", "other_covid_found")[0]
            o_lost = o_found - _pooled(others, "smoothed", "other_covid_found")[0]
            parts.append(
                "Stony Brook's images keep more pixel noise than the others (median "
                f"{lv['median_noise_noisy']:.4f} against {lv['median_noise_clean']:.4f} on the training images): they "
                "were shrunk to 240 x 240 by the repository they come from, the others to a 256-px short side with "
                "Lanczos for this set. Blurred just enough to match the others (Gaussian, sigma "
                f"{lv['sigma']} px), the shipped model finds **{cnt('smoothed', 'noisy_covid_found')}** of Stony Brook's "
                f"val and test COVID-19 images instead of {cnt('whole', 'noisy_covid_found')} (McNemar p = "
                f"{r['smoothed']['mcnemar']['noisy_covid_found']:.2g}; the other sources' COVID-19: "
                f"{cnt('whole', 'other_covid_found')} -> {cnt('smoothed', 'other_covid_found')}); with that much noise "
                f"added to every image (sd {lv['sd']}), it calls {cnt('grained', 'non_covid_called_covid')} non-COVID-19 "
                f"images COVID-19 instead of {cnt('whole', 'non_covid_called_covid')} (p = "
                f"{r['grained']['mcnemar']['non_covid_called_covid']:.2g}). The model has learned pixel noise as part "
                "of COVID-19; a Stony Brook film as the hospital stores it (full size) would reach it without most of "
                "that noise (the runtime's resize averages the pixels it shrinks). " + (f"The other {len(others)} model{'s' * (len(others) != 1)} probed that were trained with Stony Brook lose {lost} of "
                             f"their {found} Stony Brook findings when smoothed ({100 * lost / found:.0f}%; of their other sources' "
                             f"COVID-19 findings {o_lost} of {o_found}, {100 * o_lost / o_found:.0f}%). " if others else "")
                + "`python benchmarks/noise_probe.py ... --split val+test`; `benchmarks/ablation.md`, \"How far "
                "statistics without anatomy get\".")
            parts[-1] += grain_note()
    return "\n\n".join(textwrap.fill(p, 118, break_on_hyphens=False) for p in parts) + ("\n" if parts else "")


def _pooled(models: list[dict], cond: str, key: str) -> tuple[int, int]:
    """A noise-probe count (k of n) summed over several models' results."""
    return sum(m[cond][key][0] for m in models), sum(m[cond][key][1] for m in models)


def grain_note() -> str:
    """What the same probe finds in the runs trained with ``--augment grain`` (never shipped)."""
    if not NOISE_PROBE_GRAIN.is_file():
        return ""
    runs = [m for name, m in json.loads(NOISE_PROBE_GRAIN.read_text())["models"].items() if "-grain-" in name]
    if not runs:
        return ""

    def total(cond: str, key: str) -> str:
        return "{}/{}".format(*_pooled(runs, cond, key))

    return (f" The same recipe trained with `--augment grain` (blur and noise after resizing, every class alike; "
            f"{len(runs)} seeds, never shipped) finds {total('smoothed', 'noisy_covid_found')} of those Stony Brook "
            f"images smoothed (whole: {total('whole', 'noisy_covid_found')}) and calls "
            f"{total('grained', 'non_covid_called_covid')} non-COVID-19 images COVID-19 grained (whole: "
            f"{total('whole', 'non_covid_called_covid')}; `benchmarks/results/noise-probe-grain`; its accuracy against the "
            "recipe, seed pair by seed pair: `benchmarks/ablation.md`, \"Grain at the input resolution\").")


def margin_note(op: dict) -> str:
    """The operating point's margin and what it cost on val (edgecxr calibrate --op-margin)."""
    if not op.get("margin_logit"):
        return ""
    w = op.get("without_margin", {})
    return (f" The threshold sits {op['margin_logit']:g} log-odds below every val COVID-19 image it keeps (`--op-margin`,"
            f" room for INT8/bf16 error); without that margin it would be {w.get('threshold', float('nan')):.3f}"
            f" (val specificity {100 * w.get('val_specificity', float('nan')):.1f}%).")


def guard_recorded() -> str:
    """The guard's recorded rejection of ood_data/ and acceptance of dev CXRs (benchmarks/results/guard-*.txt)."""
    import re

    res = ROOT / "benchmarks" / "results"
    rep = (res / "guard-report.txt").read_text() if (res / "guard-report.txt").exists() else ""
    mar = (res / "guard-margin.txt").read_text() if (res / "guard-margin.txt").exists() else ""
    ood = re.search(r"ood rejected (\d+) / (\d+)", rep)
    dev = re.search(r"margin 1\.0: .*?val\+test (\d+)/(\d+)", mar)
    parts = []
    if ood:
        parts.append(f"{ood[1]}/{ood[2]} of `ood_data/` are rejected (`python benchmarks/guard_report.py`)")
    if dev:
        parts.append(f"{dev[1]} of all {dev[2]} dev val/test CXRs pass (`python benchmarks/guard_margin.py`)")
    return ", and ".join(parts) or "(run benchmarks/guard_report.py and guard_margin.py)"


def _nc_flags() -> dict[str, bool]:
    return {r["file"].split("/")[-1]: r["non_commercial_only"] == "yes" for r in csv.DictReader(MANIFEST.open())}


def _arrays(res: dict, subset=None):
    preds = [p for p in res["predictions"] if subset is None or subset(p)]
    classes = res["classes"]
    y = np.array([classes.index(p["label"]) for p in preds])
    prob = np.array([p["prob"] for p in preds])
    return preds, y, prob


def _acc_ci(y, prob) -> str:
    k, n = int(np.sum(prob.argmax(1) == y)), len(y)
    lo, hi = wilson_ci(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"


def _sens(y, prob, classes, sources, src, cls) -> str:
    r = per_source(y, prob, classes, sources).get(src, {}).get("sensitivity", {}).get(cls)
    return f"{r['k']}/{r['n']} = {100 * r['value']:.0f}%" if r else "-"


def unseen_source_table(split: str = "test") -> str:
    """Research runs trained with one COVID-19 source left out (`EXCLUDE=SRC TAG=-e60-noSRC`) beside the same seed
    trained on every source: that source's COVID-19 sensitivity and the AUC of its COVID-19 images against every
    non-COVID-19 image (`operating_points.auc_by_source`), and accuracy on the other sources' images with the paired
    exact McNemar test there."""
    from operating_points import auc_by_source

    rows = []
    for path in sorted(TRAINING.glob(f"research-*-e60-no*-s*-eval-{split}/eval.json")):
        m = re.fullmatch(rf"research-(.+)-e60-no(\w+?)(?:-sel)?-s(\d+)-eval-{split}", path.parent.name)
        base = TRAINING / f"research-{m[1]}-e60-s{m[3]}-eval-{split}/eval.json" if m else None
        if base is None or not base.is_file():
            continue
        ok, seen, other, cohen, auc = [], [], [], [], []
        for res in (json.loads(base.read_text()), json.loads(path.read_text())):
            preds, y, prob = _arrays(res)
            src = [p["source"] for p in preds]
            right = (prob.argmax(1) == y)[np.array(src) != m[2]]
            ok.append(right)
            other.append(f"{100 * right.mean():.1f}")
            seen.append(_sens(y, prob, res["classes"], src, m[2], "COVID-19"))
            cohen.append(_sens(y, prob, res["classes"], src, "ieee8023", "COVID-19"))
            auc.append(f'{100 * auc_by_source(y, prob, src, res["classes"].index("COVID-19"))[m[2]]:.1f}')
        p = mcnemar_exact(ok[0], ok[1])["p_value"]
        cfg = path.parent.parent / path.parent.name.replace(f"-eval-{split}", "-config.json")
        chosen_without = cfg.is_file() and json.loads(cfg.read_text()).get("train_config", {}).get("select_without")
        rule = "checkpoint chosen without it" if chosen_without else "checkpoint chosen on every val image"
        rows.append(f"| {m[1]}, seed {m[3]}, without {m[2]} ({rule}) | {seen[1]} (with it: {seen[0]}) | "
                    f"{auc[1]} ({auc[0]}) | "
                    f"{other[1]} vs {other[0]} "
                    f"(n={len(ok[0])}), p = {p:.2g} | {cohen[1]} vs {cohen[0]} |")
    if not rows:
        return "(no leave-one-source-out runs recorded)"
    return "\n".join(["| research run | COVID-19 sensitivity on the left-out source | its COVID-19 AUC against every "
                      "non-COVID-19 image, without (with) it | accuracy on the other sources' images: without vs with it, "
                      "McNemar | Cohen-collection COVID-19: without vs with |",
                      "|---|---|---|---|---|", *rows])


ARCH_LABELS = {"covid-densenet": "Covid-DenseNet", "densenet121": "DenseNet121"}


def cohen_unseen_note(split: str = "test") -> str:
    """The shipped configuration as the Cohen collection's leave-out: it trains only on that collection's permissive
    images, the research configuration on all of them. Per architecture and configuration, over the recipe's 60-epoch
    seeds: the collection's COVID-19 images found at the argmax (pooled over seeds) and their COVID-19 AUC against
    every non-COVID-19 image (mean over seeds; `operating_points.auc_by_source`)."""
    from operating_points import auc_by_source

    parts, n_images = [], 0
    for arch in ARCHS:
        cells = []
        for config in ("shipped", "research"):
            found = total = 0
            aucs = []
            for path in sorted(TRAINING.glob(f"{config}-{arch}-e60-s*-eval-{split}/eval.json")):
                if not re.fullmatch(rf"{config}-{arch}-e60-s\d+-eval-{split}", path.parent.name):
                    continue  # a recipe variant such as -e60-smooth1-s1, not one of the recipe's seeds
                res = json.loads(path.read_text())
                preds, y, prob = _arrays(res)
                src = [p["source"] for p in preds]
                hit = per_source(y, prob, res["classes"], src)["ieee8023"]["sensitivity"]["COVID-19"]
                found, total, n_images = found + hit["k"], total + hit["n"], hit["n"]
                aucs.append(auc_by_source(y, prob, src, res["classes"].index("COVID-19"))["ieee8023"])
            if aucs:
                cells.append(f"{config} {found}/{total} = {100 * found / total:.0f}% over {len(aucs)} seeds, "
                             f"AUC {100 * np.mean(aucs):.1f}")
        if len(cells) == 2:
            parts.append(f"{ARCH_LABELS[arch]}: {cells[0]}; {cells[1]}")
    if not parts:
        return ""
    train = [r for r in csv.DictReader(MANIFEST.open()) if r["split"] == "train" and r["source"] == "ieee8023"]
    covid = [r["non_commercial_only"] == "no" for r in train if r["class"] == "COVID-19"]
    other = [r["non_commercial_only"] == "no" for r in train if r["class"] != "COVID-19"]
    return ("**The Cohen collection left out** is, nearly, the shipped configuration: it trains only on that "
            f"collection's permissive images ({sum(covid)} of its {len(covid)} COVID-19 training images and "
            f"{sum(other)} of its {len(other)} others), the research configuration on all of them. Its {n_images} "
            f"COVID-19 {split} images found at the argmax (pooled over the 60-epoch seeds) and their COVID-19 AUC "
            f"against every non-COVID-19 {split} image (mean over seeds): " + "; ".join(parts)
            + f" (`benchmarks/results/training/{{shipped,research}}-*-e60-s*-eval-{split}`). Without the collection "
            "in training its COVID-19 images still rank above most others, but the argmax finds fewer of them.\n\n")


def _better(d: dict) -> str | None:
    """Which architecture a Covid-DenseNet - DenseNet121 difference (``seeds.pooled``) shows better, if any: its 95%
    interval clear of 0 and p < 0.05."""
    if d["p_value"] < 0.05 and (d["hi"] < 0 or d["lo"] > 0):
        return "DenseNet121" if d["hi"] < 0 else "Covid-DenseNet"
    return None


def operating_point_comparison() -> str:
    """Both architectures' 60-epoch research seeds at the operating point `edgecxr calibrate` fits on val."""
    from operating_points import ARCHS as OP_ARCHS, arch_runs, compare

    by_arch = {a: arch_runs(TRAINING, f"research-{a}-e60", 0.95, 0.15) for a in OP_ARCHS}
    c = compare(by_arch)
    if not c or len(c["seeds"]) < 3:
        return ""
    acc = {a: 100 * np.array([r[2]["accuracy"] for r in rows]) for a, rows in by_arch.items()}
    spec = {a: 100 * np.array([r[3]["val_specificity"] for r in rows]) for a, rows in by_arch.items()}
    r, t = c["accuracy"], c["per_pair"]["COVID-19 AUC on test"]
    mean = {a: {k: 100 * np.mean([row[2][k] for row in rows if k in row[2]]) for k in rows[0][2]}
            for a, rows in by_arch.items()}
    worst = min(v for m in mean.values() for k, v in m.items() if k.startswith("COVID-19 sensitivity "))
    bound = 100 * np.mean([row[3]["test_offset_bound"] for rows in by_arch.values() for row in rows])
    pneu = " and ".join(f"{mean[a]['Pneumonia sensitivity']:.1f}%" for a in OP_ARCHS)
    better = _better(r)
    verdict = f"{better} is better" if better else "neither is shown better"
    return (f"**At the operating point, {verdict}** in this configuration: fitted on each run's val "
            f"predictions as `edgecxr calibrate` fits the shipped model (>= 95% val COVID-19 sensitivity, temperature, "
            f"0.15 log-odds margin), Covid-DenseNet keeps {spec[OP_ARCHS[0]].mean():.1f}% val specificity on average "
            f"against DenseNet121's {spec[OP_ARCHS[1]].mean():.1f}%, and on dev test reaches "
            f"{acc[OP_ARCHS[0]].mean():.1f}% against {acc[OP_ARCHS[1]].mean():.1f}% "
            f"({len(c['seeds'])} seed pairs image by image: {r['mean']:+.1f} points [{r['lo']:+.1f}, {r['hi']:+.1f}], "
            f"p = {r['p_value']:.2g}); its COVID-19 AUC is lower in {t['lower']} of {t['n']} test pairs "
            f"({t['mean']:+.1f} points). Both then find at least {worst:.1f}% of each source's COVID-19 test images on "
            f"average, the Cohen collection's included, and Pneumonia pays: {pneu} of it found (`python benchmarks/operating_points.py benchmarks/results/training "
            f"research --tag=-e60`, `benchmarks/results/operating-points-research-e60.md`; the 30-epoch recipe's three "
            f"seed pairs do not show it). No prior shift makes up the research goal's 85%: the best per-class offsets of "
            f"the log-probabilities, fitted on the test images themselves (an upper bound, not a result), give "
            f"{bound:.1f}% on average over these {sum(len(r) for r in by_arch.values())} runs.\n\n")


def shipped_at_operating_point(res: dict, nc: dict[str, bool]) -> str:
    """The shipped model's dev test results at the argmax and at its operating point (the runtime's finding), on all
    images and on the permissive ones, with what the threshold costs."""
    from operating_points import metrics

    from edgecxr.runtime.operating_point import findings

    rule = (res.get("operating_point") or {}).get("rule") or {}
    if rule.get("threshold") is None:
        return ""
    classes = res["classes"]
    rows = {}
    for label, keep in (("all", lambda p: True), ("permissive", lambda p: not nc.get(p["file"].split("/")[-1], False))):
        preds = [p for p in res["predictions"] if keep(p)]
        prob = np.array([p["prob"] for p in preds], dtype=np.float64)
        y = np.array([classes.index(p["label"]) for p in preds])
        src = [p.get("source") or "?" for p in preds]
        f = findings(np.log(prob + 1e-12), classes, rule)  # eval.json keeps softmax(logits): log gives them back
        rows[label] = (len(y), metrics(prob.argmax(1), y, src, classes), metrics(f, y, src, classes))
    head = " | ".join(f"{lab} {n} images: argmax -> operating point" for lab, (n, _, _) in rows.items())
    lines = [f"| dev test | {head} |", "|---|" + "---|" * len(rows)]
    for k in rows["all"][1]:
        cells = " | ".join(f"{100 * a[k]:.1f} -> **{100 * o[k]:.1f}**" if k in a else "-" for _, a, o in rows.values())
        lines.append(f"| {k} | {cells} |")
    return "\n".join(lines)


def shipped_seed_table(nc: dict[str, bool]) -> str:
    """Each seed of the shipped recipe: val macro-F1 (the selection rule), accuracy on all and on the permissive test
    images, Hannover and Stony Brook COVID-19, and where it was trained (CPU or GPU: config's trained_on)."""
    found = seed_runs(TRAINING, "shipped", "covid-densenet-e60", "test")
    if not found:
        return "(no seeds recorded)"
    rows = ["| seed | trained on | val macro-F1 | dev test, all | permissive test | COVID-19 mhh | COVID-19 sbu |",
            "|---|---|---|---|---|---|---|"]
    perm = []
    for seed, res in sorted(found.items()):
        cfg = json.loads((TRAINING / f"shipped-covid-densenet-e60-s{seed}-config.json").read_text())
        _, y, prob = _arrays(res)
        preds, yp, pp = _arrays(res, lambda q: not nc[q["file"].split("/")[-1]])
        perm.append(100 * np.mean(pp.argmax(1) == yp))
        src = [q["source"] for q in preds]
        rows.append(f"| {seed} | {trained_where(cfg)} | {cfg['val_score']:.4f} | {100 * np.mean(prob.argmax(1) == y):.1f} | "
                    f"{_acc_ci(yp, pp)} | {_sens(yp, pp, res['classes'], src, 'mhh', 'COVID-19')} | "
                    f"{_sens(yp, pp, res['classes'], src, 'sbu', 'COVID-19')} |")
    sd = f" ± {np.std(perm, ddof=1):.1f}" if len(perm) > 1 else ""
    return "\n".join(rows) + (f"\n\nPermissive dev test over {len(perm)} seeds: **{np.mean(perm):.1f}{sd}%** "
                              f"(issue 14's goal: 86%).")


def shipped_architecture_comparison(nc: dict[str, bool]) -> str:
    """Covid-DenseNet against DenseNet121 in the shipped configuration, seed by seed on the permissive test images:
    at the argmax and at each run's own operating point (fitted on its val images as `edgecxr calibrate` does)."""
    from operating_points import ARCHS as OP_ARCHS, arch_runs, compare

    from seeds import pooled

    drop = {f for f, flag in nc.items() if flag}
    by_arch = {a: arch_runs(TRAINING, f"shipped-{a}-e60", 0.95, 0.15, drop) for a in OP_ARCHS}
    c = compare(by_arch)
    if not c or len(c["seeds"]) < 2:
        return ""
    permissive = lambda q: not nc[q["file"].split("/")[-1]]  # noqa: E731
    right = {a: {} for a in OP_ARCHS}
    for a in OP_ARCHS:
        for seed, res in seed_runs(TRAINING, "shipped", f"{a}-e60", "test").items():
            res = {**res, "predictions": sorted(res["predictions"], key=lambda q: q["file"])}  # as seeds.py orders them
            _, y, prob = _arrays(res, permissive)
            right[a][seed] = (prob.argmax(1) == y).astype(float)
    arg = pooled(np.mean([right[OP_ARCHS[0]][s] - right[OP_ARCHS[1]][s] for s in c["seeds"]], 0))
    acc = {a: {r[0]: (100 * r[1]["accuracy"], 100 * r[2]["accuracy"]) for r in by_arch[a]} for a in OP_ARCHS}
    seeds = c["seeds"]
    cells = "; ".join(f"seed {s}: {acc[OP_ARCHS[0]][s][0]:.1f} / {acc[OP_ARCHS[1]][s][0]:.1f}% at the argmax, "
                      f"{acc[OP_ARCHS[0]][s][1]:.1f} / {acc[OP_ARCHS[1]][s][1]:.1f}% at the operating point" for s in seeds)
    r = c["accuracy"]
    am = {a: np.mean([v[0] for v in acc[a].values()]) for a in OP_ARCHS}
    wo = {a: 100 * np.mean([row[2]["accuracy"] for row in arch_runs(TRAINING, f"shipped-{a}-e60", 0.95, 0.15, drop,
                                                                      {"ieee8023"})]) for a in OP_ARCHS}
    cohen_wo = 100 * np.mean([row[2]["COVID-19 sensitivity ieee8023"] for a in OP_ARCHS
                              for row in arch_runs(TRAINING, f"shipped-{a}-e60", 0.95, 0.15, frozenset(), {"ieee8023"})])

    def says(d: dict) -> str:
        return f"{b} ahead" if (b := _better(d)) else "neither shown better"

    return (f"**Against plain DenseNet121 in this configuration** ({len(seeds)} seed pairs, the same recipe, permissive "
            f"test images, Covid-DenseNet / DenseNet121): {cells}. Image by image over the pairs, Covid-DenseNet - "
            f"DenseNet121 = {arg['mean']:+.1f} points [{arg['lo']:+.1f}, {arg['hi']:+.1f}] at the argmax (p = "
            f"{arg['p_value']:.2g}: {says(arg)}) and {r['mean']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}] at the "
            f"operating point (p = {r['p_value']:.2g}: {says(r)}) (`python benchmarks/operating_points.py "
            f"benchmarks/results/training shipped --tag=-e60 --permissive-test ../shared/cxr/dev/MANIFEST.csv`). "
            f"There the seeds of either architecture spread widely: each threshold is set by the few val COVID-19 "
            f"images of the Cohen collection a permissively trained model ranks lowest. Fitted without those (`--fit-without "
            f"ieee8023`), the same runs reach {wo[OP_ARCHS[0]]:.1f}% and {wo[OP_ARCHS[1]]:.1f}% on average at the "
            f"operating point (argmax: {am[OP_ARCHS[0]]:.1f} and {am[OP_ARCHS[1]]:.1f}%), and find {cohen_wo:.1f}% of the "
            f"Cohen collection's COVID-19 test images, both architectures' runs together (all 128 test images; `benchmarks/ablation.md`, \"At the operating point\").\n\n")


def trained_where(cfg: dict) -> str:
    """A run's machine and autocast from its config's trained_on; older runs predate it (all on the AMD EPYC CPU)."""
    on = cfg.get("trained_on")
    if not on:
        return "AMD EPYC, bfloat16 (before runs recorded it)"
    name = on["name"].split(";")[0] if on["device"] == "cpu" else on["name"]
    return f"{name}, {on['autocast']}"


def gpu_note(seeds60: dict) -> str:
    """Which research seeds were trained where, grouped by machine and autocast (trained_on in each config)."""
    where: dict[str, dict[str, list[str]]] = {}
    for arch, seeds in seeds60.items():
        for s in seeds:
            cfg = json.loads((TRAINING / f"research-{arch}-e60-s{s}-config.json").read_text())
            where.setdefault(trained_where(cfg), {}).setdefault(arch, []).append(str(s))
    return "; ".join(", ".join(f"{arch} seeds {' '.join(ss)}" for arch, ss in by_arch.items()) + f" on {machine}"
                     for machine, by_arch in where.items())


def section(runs: dict[str, dict], nc: dict[str, bool], title: str, subset=None) -> list[str]:
    first = next(iter(runs.values()))
    classes = first["classes"]
    lines = [f"### {title}", "", "| model | accuracy % [95% CI] | COVID-19 mhh | COVID-19 sbu | COVID-19 ieee8023 (Cohen) | "
             "Normal (nih) | Pneumonia nih | Pneumonia ieee8023 | macro F1 |", "|---|---|---|---|---|---|---|---|---|"]
    for label, res in runs.items():
        preds, y, prob = _arrays(res, subset)
        src = [p["source"] for p in preds]
        m = point_metrics(y, prob, classes)
        lines.append(f"| {label} | {_acc_ci(y, prob)} | " + " | ".join(
            _sens(y, prob, classes, src, s, c) for s, c in (("mhh", "COVID-19"), ("sbu", "COVID-19"), ("ieee8023", "COVID-19"),
                                                            ("nih", "Normal"), ("nih", "Pneumonia"), ("ieee8023", "Pneumonia")))
                     + f" | {100 * m['macro_f1']:.1f} |")
    return lines + [""]


def main() -> None:
    runs = {}
    pairs = [a.partition("=")[::2] for a in sys.argv[1:]] or [(k, v) for k, v in DEFAULT_RUNS if v.is_file()]
    for label, path in pairs:
        runs[label] = json.loads(Path(path).read_text())
    nc = _nc_flags()
    files = [[p["file"] for p in r["predictions"]] for r in runs.values()]
    assert all(f == files[0] for f in files), "the evals are not on the same images"
    shipped_label, shipped = next(iter(runs.items()))
    classes = shipped["classes"]
    train = json.loads(Path(shipped.get("model", shipped.get("checkpoint"))).with_suffix(".json").read_text())
    permissive = lambda p: not nc.get(Path(p["file"]).name, False)  # noqa: E731
    lines = section(runs, nc, f"All dev test images ({len(files[0])}; non-commercial ones are evaluated, never shipped)")
    lines += section(runs, nc, "Permissive-licence dev test images only", permissive)
    _, ys, ps = _arrays(shipped)
    mc_rows = []
    for label, res in list(runs.items())[1:]:
        _, y2, p2 = _arrays(res)
        mc = mcnemar_exact(ps.argmax(1) == ys, p2.argmax(1) == y2)
        mc_rows.append(f"| {shipped_label} vs {label} | {mc['a_only']} | {mc['b_only']} | {mc['p_value']:.3g} |")
    shipped_seeds = (seeds_summary(TRAINING, "shipped", "test", "-e60")
                     if seed_runs(TRAINING, "shipped", "covid-densenet-e60", "test") else ["(no seeds recorded)"])
    seeds = {a: sorted(seed_runs(TRAINING, "research", a, "test")) for a in ARCHS}
    seed_lines = seeds_summary(TRAINING, "research", "test") if all(seeds.values()) else ["(no multi-seed results recorded)"]
    todo = [f"{a}: {len(v)} research seed(s) of the 3 issue 14 asks for" for a, v in seeds.items() if len(v) < 3]
    seeds60 = {a: sorted(seed_runs(TRAINING, "research", a + "-e60", "test")) for a in ARCHS}
    seed60_lines = (seeds_summary(TRAINING, "research", "test", "-e60") if any(seeds60.values())
                    else ["(no 60-epoch research runs recorded)"])
    todo += [f"{a}, 60-epoch recipe: {len(v)} research seed(s) of 3" for a, v in seeds60.items() if len(v) < 3]
    protocol_runs = (("FRACTION=0.25", "f25"), ("FRACTION=0.5", "f50"), ("BALANCED=0", "unbal"))
    todo += [f"`EPOCHS=60 {n}`" for n, tag in protocol_runs
             if not (TRAINING / f"research-covid-densenet-e60-{tag}-s0-eval-test/eval.json").is_file()]
    present = {label for label in runs}
    notes = []
    if any("training patients" in x for x in present):
        notes.append("rows with a share of the training patients are the paper's training-set-size protocol")
    if any("unbalanced" in x for x in present):
        notes.append("the unbalanced row its balanced-vs-unbalanced protocol (every other row uses class-balanced sampling)")
    protocol_note = (f"{'; '.join(notes).capitalize()}; one seed each, research configuration: compare each with the "
                     "research seed-0 row of its schedule (30 or 60 epochs). " if notes else "")
    op = train.get("operating_point") or {}
    guard = train.get("guard") or {}
    text = f"""# Model card: Covid-DenseNet (edgecxr default model, `covid-densenet-cxr3`)

**Not a medical device. Not clinically validated.** In this data, class is confounded with hospital
(every Normal image is NIH; COVID-19 images come from Hannover (mhh), Stony Brook (sbu) and the
Cohen collection (ieee8023)). A model can score well by recognising the source, not the disease:
read the per-source columns, not only the pooled accuracy. These numbers describe this dev split only.

## What it is
- Covid-DenseNet (our own design from the abstract of the Digital Health 2025 paper; see
  `edgecxr/models/covid_densenet.py`): DenseNet121 backbone, three-scale taps, CBAM-style attention
  per scale, top-down fusion with learned scale weights. 7.33 M parameters, 5.83 GFLOPs at 224x224.
- Classes: {", ".join(classes)}. Input: one grayscale radiograph through `edgecxr.preprocess`
  ({json.dumps(train["preprocess"])}).
- Trained **from scratch** in the *shipped* configuration: permissive-licence dev training images
  only ({train["data"].get("n_train")} images, {train["data"].get("non_commercial_training_images", 0)} non-commercial);
  best epoch {train["epoch"]} of {train["train_config"]["epochs"]} chosen by macro F1 on **all** {train["data"].get("n_val")} val
  images (non-commercial ones included, so the choice does not reward recognising the two permissive
  COVID-19 hospitals). Recipe: `{json.dumps({k: train["train_config"][k] for k in ("augment", "label_smoothing", "ema", "balanced", "lr", "batch_size", "epochs", "select", "bf16")})}`.
- Seed: the run with the best val macro-F1 among the seeds of this recipe trained so far (`benchmarks/ablation.md`).
  Seeds of one recipe differ by several points on these small test sets (below, "Seed spread"): read the table
  below as one draw, and its comparisons with other single runs as no more than that.
- Operating point (fitted on val by `edgecxr calibrate`): temperature {op.get("temperature", float("nan")):.2f}
  (val ECE {op.get("ece_val_before", float("nan")):.3f} -> {op.get("ece_val_after", float("nan")):.3f});
  finding COVID-19 when its calibrated probability >= {op.get("threshold", float("nan")):.3f}, which gave
  val COVID-19 sensitivity {100 * op.get("val_sensitivity", float("nan")):.1f}% at specificity {100 * op.get("val_specificity", float("nan")):.1f}%.{margin_note(op)}
- Input guard: {guard.get("method")} score on {guard.get("feature")} features{f" (k={guard['k']})" if guard.get("method") == "knn" else ""}{" (outlier-exposure head, limit at the 99.5th percentile of val + cross-fitted training scores, with a Mahalanobis backstop at their maximum; README, Input guard)" if guard.get("method") == "combined" else ""}, threshold
  {guard.get("threshold", float("nan")):.4f} (val acceptance {100 * guard.get("val_accept_rate", float("nan")):.1f}%; rejects
  {100 * (guard.get("ood_reject_rate") or float("nan")):.1f}% of `ood_data/`, which was also used to choose among {guard.get("chosen_from")} candidate scores).
  Before the model, the runtime's image rules (shape 0.6-1.67 width/height, some fine structure) refuse more:
  with them {guard_recorded()}.{" The threshold is margin " + format(guard.get("margin"), "g") + " x the 99.5th percentile of val scores (`edgecxr calibrate --margin`)." if guard.get("margin") not in (None, 1.0) else ""}
  The score is computed in a form that survives bf16/fp16 engines (explicit residual outside the principal
  directions; OpenVINO's bf16 had reduced the textbook |z|^2 - |p|^2 form to noise, correlation 0.24 with FP32).

## Results on dev test (image level; sensitivity k/n per source)

{chr(10).join(lines)}
Accuracy intervals: Wilson 95%. {protocol_note}Paired exact McNemar tests on all
{len(files[0])} test images (one seed each: **no claim that one model is better follows from one seed**):

| pair | first right, second wrong | reverse | p |
|---|---|---|---|
{chr(10).join(mc_rows)}

## Seed spread of the shipped recipe (60 epochs)

{chr(10).join(shipped_seeds)}

Per seed, with the permissive test images alone (the shipped configuration's goal):

{shipped_seed_table(nc)}

`python benchmarks/seeds.py benchmarks/results/training shipped test -e60`. The shipped model is the seed with the
best val macro-F1 (seed 1); the mean over seeds is what the recipe gives.

{shipped_architecture_comparison(nc)}
## Covid-DenseNet versus DenseNet121 over seeds (research configuration)

{chr(10).join(seed_lines)}

Same data (every dev training image), recipe and selection for both; `python benchmarks/seeds.py
benchmarks/results/training research test`. A difference counts only if it holds across seeds with a small paired p.
These runs used the 30-epoch recipe; the final recipe trains 60 epochs, {len(seeds60["covid-densenet"])} seeds of Covid-DenseNet
and {len(seeds60["densenet121"])} of DenseNet121 ({gpu_note(seeds60)}):

{chr(10).join(seed60_lines)}

`python benchmarks/seeds.py benchmarks/results/training research test -e60 --plot
benchmarks/results/seeds-research-e60-test.png`:

![each seed of both architectures on dev test, with 95% intervals and issue 14's goals](../../benchmarks/results/seeds-research-e60-test.png)

**Neither architecture is shown better** ({verdict(TRAINING) if all(seeds60.values()) else "too few seeds"}; set that
interval beside the paper's +3.33 / +4.17 points: this test set cannot settle a gap of that size) at the argmax.

{operating_point_comparison()}Both miss issue 14's research goal (85%): Cohen-collection
COVID-19 and Pneumonia hold them back, and most of those errors are shared by the six models of seeds 0-2 (8 of the 44
NIH Pneumonia and 3 of the 14 Cohen-collection COVID-19 test images are missed by every one; averaging the six gives
79.7%, and averaging all sixteen 60-epoch research models 79.7% too: `benchmarks/results/ensemble-research-e60-all.md`); those 14 Cohen
images come from only 8 patients (`benchmarks/results/ensemble-research-e60.md`). The recipe's evidence and this
verdict: `benchmarks/ablation.md`, "Summary".

## A COVID-19 source the model has not seen (research configuration)

The dev data has three COVID-19 sources, so one can be left out of training and used as a hospital the model has
never seen (`EXCLUDE=sbu TAG=-e60-nosbu EPOCHS=60 benchmarks/train_models.sh research SEED ARCH`, `EXCLUDE=mhh
TAG=-e60-nomhh` likewise; val and test keep
every source). Dev test:

{unseen_source_table()}

Without Stony Brook in training, the seed-0 models (DenseNet121's under both checkpoint rules) and Covid-DenseNet's
seed 1 call none of its COVID-19 images COVID-19, and DenseNet121's seed 1 one of 15 (test above; val: none of 15 in
all five; `benchmarks/ablation.md`): what these models learn as COVID-19 is, to a large part, what their training
sources' COVID-19 images share. How far it carries depends on the hospital: without Hannover in training the
same seeds still find 6-9 of its 13 COVID-19 test images and rank them well above the non-COVID-19 images (AUC 0.94-0.95,
against 0.63-0.72 for Stony Brook left out), and the operating point, fitted without the left-out source, flags all
13 (Stony Brook: 7-15 of 15, with 16-65% of the non-COVID-19 images flagged too; `benchmarks/ablation.md`,
"Hannover left out"). The shipped model is trained the same way, so at a hospital it has not seen, its
per-source sensitivities above cannot be assumed to hold; measure them there first.
The same holds the other way round: with Stony Brook out, 54 of the 124 COVID-19 training images
(44%) are the Cohen collection's instead of 54 of 174 (31%), and DenseNet121 with issue 14's first recipe (40 epochs,
class-weighted loss) finds 12, 11 and 10 of its 14 COVID-19 test images over three seeds (5, 7 and 9 with every source
and the 60-epoch recipe; Covid-DenseNet, two seeds: 9 and 8 against 8 and 9), but not more of its 13 val images (16/39 vs 14/39) and fewer of its Pneumonia images
(`benchmarks/ablation.md`, "The issue's first recipe").

{cohen_unseen_note()}Details: `benchmarks/ablation.md`, "Leaving a source out".

## What the model looks at: the shortcut probe

{shortcut_section()}

What this shows for the shipped model: zoomed 1.25x (as a device that frames tighter would send), Stony Brook
COVID-19 sensitivity falls from 14/15 to 10/15 and accuracy from 82.0% to 72.7% (McNemar p = 0.004); with only the
film's border left, NIH Normal images are still called Normal (36/37): the model reads hospital marks (Stony Brook's
"PORTABLE" text and "L" markers sit in the top corners) as well as lungs. Every research model probed shows the same
(`benchmarks/ablation.md`). The runtime's guard refuses *lungs-out* and *blank* inputs (accepts 7/128 and 0/128) but
not zoomed or border-blanked CXRs (126/128, 127/128). A recipe that erases borders in training (`--augment robust`)
shrank these losses but was worse on the whole images (72.7% vs 82.0%, p = 0.029; one seed) and is not used.

{statistics_section(shipped)}
## At the operating point, and what is not done

At the operating point (COVID-19 whenever its calibrated probability reaches the threshold, chosen
for >= 95% val COVID-19 sensitivity) the shipped model trades specificity for sensitivity; `edgecxr eval`
prints both the argmax and the operating-point results (`benchmarks/results/shipped-eval-test/eval.md`). The finding the
runtime reports is the operating point's:

{shipped_at_operating_point(shipped, nc)}

The threshold is fitted on every val image, the Cohen collection's 13 COVID-19 images included, which a model trained
on permissive images hardly learns from (2 of its COVID-19 training images): reaching 95% on val brings it down to
where most Pneumonia images are called COVID-19 too. Every seed of the shipped recipe pays this, the shipped seed
least (`python benchmarks/operating_points.py benchmarks/results/training shipped --tag=-e60 --permissive-test
../shared/cxr/dev/MANIFEST.csv`; `benchmarks/ablation.md`, "At the operating point"). Read a COVID-19 finding as
"COVID-19 not ruled out", and the probabilities beside it.

{("Not done in this release (compute: 2 CPU cores, no GPU was lent to this task): " + "; ".join(todo)) if todo else "The multi-seed comparison and both paper protocols (size sweep, balanced vs unbalanced) are done, one seed each for the protocols"}
(`benchmarks/train_models.sh`, environment variables in its header; `runs/*/last.pt` resume). The recipe
ablation done so far, and what it has not measured yet, is in `benchmarks/ablation.md`.

## Reproduce

```bash
benchmarks/train_models.sh shipped 0 covid-densenet      # AUG=light LS=0 TAG=-light for the light recipe
benchmarks/train_models.sh research 0 covid-densenet     # never shipped: non-commercial images; seeds 0-2, both archs
FRACTION=0.25 TAG=-f25 benchmarks/train_models.sh research 0 covid-densenet   # size sweep (also 0.5); BALANCED=0 TAG=-unbal
EPOCHS=60 TAG=-e60 benchmarks/train_models.sh shipped 1 covid-densenet   # the shipped model (seed 1: best val macro-F1 of seeds 0-2)
edgecxr calibrate runs/shipped-covid-densenet-e60-s1/best.safetensors ../shared/cxr/dev/MANIFEST.csv --permissive-only --ood ood_data --outlier-exclude calibration_data/calib --margin 1.05 --op-margin 0.15 --out CALIBRATED.safetensors
python benchmarks/ship_weights.py CALIBRATED.safetensors && python benchmarks/record_shipped_predictions.py
python benchmarks/model_card.py     # the recorded results listed in DEFAULT_RUNS, and benchmarks/seeds.py
```

## Data and licences
Shipped weights saw only permissive images: NIH ChestX-ray14 subset (no restrictions; NIH Clinical
Center, Wang et al. CVPR 2017), Hannover Medical School COVID-19 repository (CC BY 3.0), Stony Brook
COVID-19-NY-SBU (CC BY 4.0, TCIA) and CC BY images of the Cohen collection. See `../shared/cxr/SOURCES.md`.
"""
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
