"""Which epoch each best-checkpoint rule would pick, from the per-epoch val metrics a run already wrote.

`edgecxr train --select` keeps one checkpoint: the epoch with the best val macro-F1 (`macro_f1`, the recipe's rule)
or the best mean of macro-F1 and the worst source's COVID-19 sensitivity (`worst_source`). Both scores are in every
run's metrics.csv (`val_macro_f1`, `val_sens_COVID-19_<source>`), so the other rule's choice can be read off without
training again. Only val numbers: the test accuracy of an epoch that was not kept cannot be known (its weights are
gone); a rule worth trying shows here as a different epoch with a better worst source at little cost in macro-F1.

    python benchmarks/selection_rules.py benchmarks/results/training/research-*-e60-s?-metrics.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def scores(row: dict) -> tuple[float, float, float]:
    """(macro-F1, worst source's COVID-19 sensitivity, the worst_source rule's score) of one epoch."""
    f1 = float(row["val_macro_f1"])
    sens = [float(v) for k, v in row.items() if k.startswith("val_sens_COVID-19_") and v not in ("", None)]
    worst = min(sens) if sens else float("nan")
    return f1, worst, f1 if not sens else 0.5 * (f1 + worst)


def picks(path: Path) -> dict:
    rows = list(csv.DictReader(path.open()))
    if not rows:
        raise SystemExit(f"{path}: no epochs recorded")
    by_f1 = max(rows, key=lambda r: scores(r)[0])  # first maximum, as training keeps the first epoch that reaches it
    by_ws = max(rows, key=lambda r: scores(r)[2])
    return {"run": path.name.removesuffix("-metrics.csv"), "epochs": len(rows),
            "macro_f1": (int(float(by_f1["epoch"])), *scores(by_f1)[:2]),
            "worst_source": (int(float(by_ws["epoch"])), *scores(by_ws)[:2])}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    lines = ["| run | macro_f1 rule: epoch, val macro-F1, worst COVID-19 source | worst_source rule: epoch, val macro-F1, "
             "worst COVID-19 source | same epoch |", "|---|---|---|---|"]
    same = 0
    for p in map(Path, argv):
        r = picks(p)
        a, b = r["macro_f1"], r["worst_source"]
        same += a[0] == b[0]
        lines.append(f"| {r['run']} | {a[0]}/{r['epochs']}, {a[1]:.3f}, {100 * a[2]:.0f}% | {b[0]}/{r['epochs']}, "
                     f"{b[1]:.3f}, {100 * b[2]:.0f}% | {'yes' if a[0] == b[0] else 'no'} |")
    print("\n".join(lines) + f"\n\nSame epoch in {same} of {len(argv)} runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
