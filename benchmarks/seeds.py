"""Several seeds of two architectures on the same images: mean +- sd of accuracy and of each class's and source's
sensitivity, and an exact McNemar test per seed pair (seed i of A against seed i of B), as issue 14 asks.

Run: python benchmarks/seeds.py benchmarks/results/training research test
     (reads DIR/CONFIG-ARCH-sN-eval-SPLIT/eval.json for ARCH in covid-densenet, densenet121)
     python benchmarks/seeds.py benchmarks/results/training shipped test -e60
     (a TAG: DIR/CONFIG-ARCH-e60-sN-...; an architecture without runs is left out, and so are the paired tests)
"""
import json
import re
import sys
from pathlib import Path

import numpy as np

from edgecxr.metrics import mcnemar_exact

ARCHS = ("covid-densenet", "densenet121")


def runs(root: Path, config: str, arch: str, split: str) -> dict[int, dict]:
    out = {}
    for p in sorted(root.glob(f"{config}-{arch}-s*-eval-{split}/eval.json")):
        m = re.fullmatch(rf"{config}-{arch}-s(\d+)-eval-{split}", p.parent.name)
        if m:
            out[int(m.group(1))] = json.loads(p.read_text())
    return out


def correct(res: dict) -> tuple[list[str], np.ndarray]:
    preds = sorted(res["predictions"], key=lambda p: p["file"])
    cls = res["classes"]
    return [p["file"] for p in preds], np.array([int(np.argmax(p["prob"])) == cls.index(p["label"]) for p in preds])


def msd(values: list[float]) -> str:
    v = 100 * np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def summary(root: Path, config: str, split: str, tag: str = "") -> list[str]:
    """Markdown lines: mean +- sd per metric for each architecture, then McNemar per seed pair."""
    table = {a: runs(root, config, a + tag, split) for a in ARCHS}
    table = {a: r for a, r in table.items() if r}
    if not table:
        raise SystemExit(f"no {config}-ARCH{tag}-sN-eval-{split}/eval.json under {root} (ARCH: {', '.join(ARCHS)})")
    archs = list(table)
    first = next(iter(table[archs[0]].values()))
    rows = [("accuracy", lambda r: r["image"]["accuracy"]), ("macro F1", lambda r: r["image"]["macro_f1"])]
    rows += [(f"{c} sensitivity", lambda r, c=c: r["image"]["per_class"][c]["sensitivity"]) for c in first["classes"]]
    for src, v in sorted(first["per_source"].items()):
        for c in v["sensitivity"]:
            rows.append((f"{c} sensitivity, {src}", lambda r, s=src, c=c: r["per_source"][s]["sensitivity"][c]["value"]))
    out = [f"{config} configuration, dev {split} ({first['n_images']} images): mean ± sd over seeds (%), each seed in brackets", "",
           "| metric | " + " | ".join(f"{a}{tag} (seeds {', '.join(map(str, sorted(table[a])))})" for a in archs) + " |",
           "|---|" + "---|" * len(archs)]
    for name, get in rows:
        cells = []
        for a in archs:
            vals = [get(table[a][s]) for s in sorted(table[a])]
            cells.append(f"{msd(vals)} ({', '.join(f'{100 * v:.1f}' for v in vals)})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(archs) < 2:
        return out
    out += ["", f"Paired per seed (A = {ARCHS[0]}, B = {ARCHS[1]}; same data, recipe and seed):", "",
            "| seed | accuracy A / B | A right only / B right only | exact McNemar p |", "|---|---|---|---|"]
    for s in sorted(set(table[ARCHS[0]]) & set(table[ARCHS[1]])):
        fa, ca = correct(table[ARCHS[0]][s])
        fb, cb = correct(table[ARCHS[1]][s])
        if fa != fb:
            raise SystemExit(f"seed {s}: the two evaluations hold different images")
        t = mcnemar_exact(ca, cb)
        out.append(f"| {s} | {100 * ca.mean():.1f} / {100 * cb.mean():.1f} | {t['a_only']} / {t['b_only']} | {t['p_value']:.3g} |")
    return out


def main() -> None:
    print("\n".join(summary(Path(sys.argv[1]), sys.argv[2], sys.argv[3], *sys.argv[4:5])))


if __name__ == "__main__":
    main()
