"""Would averaging several trained models help? Mean probability over `edgecxr eval` results on the same images.

Run: python benchmarks/ensemble.py A/eval.json B/eval.json [C/eval.json ...]
     python benchmarks/ensemble.py benchmarks/results/training/research-densenet121-s{0,1,2}-eval-test/eval.json

Prints, for each member and for the ensemble (argmax of the mean probability): accuracy with its 95% Wilson interval,
each class's sensitivity, COVID-19 sensitivity per source; then the exact McNemar test of the ensemble against each
member; then, per class and source, how many images (and patients) k of the members get right: errors every member
shares are data (atypical images, label noise), not seeds. A research question for issue 14 (one model per seed costs as many forward passes as members): nothing here
changes what the package ships.
"""
import json
import sys
from pathlib import Path

import numpy as np

from edgecxr.metrics import mcnemar_exact, wilson_ci


def load(path: str) -> tuple[dict, list[str]]:
    d = json.loads(Path(path).read_text())
    return {p["file"]: p for p in d["predictions"]}, d["classes"]


def describe(name: str, prob: np.ndarray, y: np.ndarray, sources: np.ndarray, classes: list[str]) -> tuple[str, np.ndarray]:
    pred = prob.argmax(1)
    ok = pred == y
    lo, hi = wilson_ci(int(ok.sum()), len(ok))
    cells = [f"{100 * ok.mean():.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"]
    for k, _ in enumerate(classes):
        m = y == k
        cells.append(f"{int(ok[m].sum())}/{int(m.sum())}")
    k = classes.index("COVID-19")
    for src in sorted(set(sources[y == k])):
        m = (y == k) & (sources == src)
        cells.append(f"{int(ok[m].sum())}/{int(m.sum())}")
    return f"| {name} | " + " | ".join(cells) + " |", ok


def main(paths: list[str]) -> None:
    if len(paths) < 2:
        sys.exit(__doc__)
    runs = [load(p) for p in paths]
    classes = runs[0][1]
    files = sorted(runs[0][0])
    for (r, c), p in zip(runs, paths):
        if sorted(r) != files or c != classes:
            sys.exit(f"{p}: other images or classes than {paths[0]}; ensemble results on the same images only")
    first = runs[0][0]
    y = np.array([classes.index(first[f]["label"]) for f in files])
    sources = np.array([first[f].get("source") or "?" for f in files])
    probs = [np.array([r[f]["prob"] for f in files], float) for r, _ in runs]
    k = classes.index("COVID-19")
    srcs = sorted(set(sources[y == k]))
    print(f"{len(files)} images; ensemble = argmax of the mean probability of {len(paths)} models\n")
    print("| model | accuracy % [95% CI] | " + " | ".join(f"{c} right" for c in classes) + " | "
          + " | ".join(f"COVID-19 {s}" for s in srcs) + " |")
    print("|---|---|" + "---|" * (len(classes) + len(srcs)))
    oks = []
    for p, prob in zip(paths, probs):
        line, ok = describe(Path(p).parent.name, prob, y, sources, classes)
        oks.append(ok)
        print(line)
    line, ens = describe(f"**mean of {len(paths)}**", np.mean(probs, axis=0), y, sources, classes)
    print(line)
    print(f"\nmember mean accuracy {100 * np.mean([o.mean() for o in oks]):.1f}%")
    for p, ok in zip(paths, oks):
        t = mcnemar_exact(ens, ok)
        print(f"ensemble vs {Path(p).parent.name}: exact McNemar p = {t['p_value']:.3f} "
              f"(ensemble alone right on {t['a_only']}, the member alone on {t['b_only']})")
    shared_errors(files, y, sources, np.array(oks), classes, patients(files))


def patients(files: list[str]) -> dict[str, str]:
    """file -> patient id from the MANIFEST.csv beside the images' split folders, when there is one."""
    import csv

    out = {}
    for f in files:
        root = Path(f).parents[2]  # <dev>/<split>/<class>/<file>
        man = root / "MANIFEST.csv"
        if man.is_file() and str(root) not in out:
            out[str(root)] = "read"
            for row in csv.DictReader(man.open()):
                out[str(root / row["file"])] = row.get("patient_id", "")
    return out


def shared_errors(files: list[str], y: np.ndarray, sources: np.ndarray, oks: np.ndarray, classes: list[str],
                  pid: dict[str, str]) -> None:
    right = oks.sum(0)
    n = len(oks)
    print(f"\n| class / source | images (patients) | right in 0 of {n} members | right in 1 .. {n - 1} | right in all {n} | "
          "images every member misses (patients) |")
    print("|---|---|---|---|---|---|")
    for k, c in enumerate(classes):
        for src in sorted(set(sources[y == k])):
            m = (y == k) & (sources == src)
            pts = {pid.get(f, f) for f, mm in zip(files, m) if mm}
            hist = np.bincount(right[m], minlength=n + 1)
            missed = [f for f, mm, r in zip(files, m, right) if mm and r == 0]
            print(f"| {c} / {src} | {int(m.sum())} ({len(pts)}) | {hist[0]} | {' '.join(map(str, hist[1:n]))} | {hist[n]} | "
                  f"{len(missed)} ({len({pid.get(f, f) for f in missed})}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
