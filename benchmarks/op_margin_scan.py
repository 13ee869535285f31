"""What the operating point's margin (`edgecxr calibrate --op-margin`) costs on val: for each margin, the threshold, val
COVID-19 sensitivity and specificity, with the checkpoint's own temperature.

    python benchmarks/op_margin_scan.py CHECKPOINT [DATA] [--margins 0,0.05,0.1,0.15,0.2,0.25]

DATA defaults to ../shared/cxr/dev/MANIFEST.csv; every val image is used (as `edgecxr calibrate` does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]


def main(checkpoint: Path, data: Path = typer.Argument(ROOT.parent / "shared" / "cxr" / "dev" / "MANIFEST.csv"),
         margins: str = "0,0.05,0.1,0.15,0.2,0.25") -> None:
    from edgecxr.data.splits import split_parts
    from edgecxr.runtime.batching import softmax
    from edgecxr.train.calibrate import fit_operating_point
    from edgecxr.train.evaluate import checkpoint_outputs

    _, parts = split_parts(data, "auto", False)
    val = parts["val"]
    outs, meta = checkpoint_outputs(checkpoint, val)
    classes = meta["classes"]
    y = np.array([classes.index(s.label) for s in val])
    t = float((meta.get("operating_point") or {}).get("temperature", 1.0))
    probs = softmax(outs["logits"] / t)
    print(f"{checkpoint.name}: {len(val)} val images, temperature {t:.3f}")
    print("| margin (log-odds) | threshold | val COVID-19 sensitivity | val specificity | val accuracy at the point |")
    print("|---|---|---|---|---|")
    for m in (float(v) for v in margins.split(",")):
        op = fit_operating_point(probs, y, classes, margin=m)
        print(f"| {m:g} | {op['threshold']:.4f} | {100 * op['val_sensitivity']:.1f}% | {100 * op['val_specificity']:.1f}% "
              f"| {100 * op['val_accuracy']:.1f}% |")


if __name__ == "__main__":
    typer.run(main)
