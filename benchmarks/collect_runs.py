"""Copy finished training runs into the results tree: ``best.json`` as ``NAME-config.json``, the metrics CSV, the
learning curves and both evaluations (``NAME-eval-test/``, ``NAME-eval-val/``), NAME being the run folder's name.

Run: python benchmarks/collect_runs.py runs/research-densenet121-e40-cwloss-s0 [runs/...] [--dest DIR]
(``benchmarks/campaign.py`` collects the runs it finishes the same way.)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

DEST = Path("benchmarks/results/training")


def collect_run(run: Path, dest: Path = DEST, name: str | None = None) -> list[Path]:
    """Copy one finished run; refuse one that lacks its checkpoint record or an evaluation. Returns what was written."""
    name = name or run.name
    need = [run / "best.json", run / "metrics.csv", run / "eval-test" / "eval.json", run / "eval-val" / "eval.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run (missing {', '.join(missing)}); finish or resume it with "
                                "benchmarks/train_models.sh first")
    dest.mkdir(parents=True, exist_ok=True)
    out = [dest / f"{name}-config.json", dest / f"{name}-metrics.csv"]
    shutil.copy2(run / "best.json", out[0])
    shutil.copy2(run / "metrics.csv", out[1])
    if (run / "curves.png").is_file():
        out.append(dest / f"{name}-curves.png")
        shutil.copy2(run / "curves.png", out[-1])
    for split in ("test", "val"):
        out.append(dest / f"{name}-eval-{split}")
        shutil.rmtree(out[-1], ignore_errors=True)
        shutil.copytree(run / f"eval-{split}", out[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (runs/CONFIG-ARCH[TAG]-sSEED)")
    ap.add_argument("--dest", type=Path, default=DEST)
    a = ap.parse_args(argv)
    for run in a.runs:
        for p in collect_run(run, a.dest):
            print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
