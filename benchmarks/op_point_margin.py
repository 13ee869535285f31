"""How close the positive verification images sit to the operating point: the lowest FP32 probabilities of the
positive class among the gate's labelled positives, and what each given artifact gives for the same images.

    python benchmarks/op_point_margin.py CHECKPOINT [ARTIFACT ...] [--n 6]

An image just above the threshold in FP32 is lost by any artifact that moves it down a little: the gate then fails on
the operating point however few argmax flips there are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer


def main(checkpoint: Path, artifacts: list[Path] = typer.Argument(None), n: int = 6) -> None:
    from edgecxr.export.context import ExportContext
    from edgecxr.resources import calibration_dir, verification_dirs
    from edgecxr.runtime.batching import run_batched, softmax
    from edgecxr.runtime.runners import make_runner
    from edgecxr.sidecar import read_sidecar

    ctx = ExportContext(checkpoint, [calibration_dir()], verification_dirs())
    op = ctx.operating_point
    if not op:
        raise typer.BadParameter("the checkpoint has no operating point (run `edgecxr calibrate` first)")
    x, y, ref = ctx.verify_set()
    t, c = float(op.get("temperature", 1.0)), ctx.classes.index(op["positive_class"])
    pos = np.flatnonzero(y == c)
    p = softmax(ref["logits"] / t)[pos, c]
    order = pos[np.argsort(p)[:n]]
    print(f"{op['positive_class']} threshold {op['threshold']:.4f}; {len(pos)} labelled positives among {len(y)} images")
    print("FP32 (lowest):", " ".join(f"{v:.4f}" for v in softmax(ref["logits"][order] / t)[:, c]))
    for art in artifacts or []:
        with make_runner(art, read_sidecar(art).engine) as r:
            z = run_batched(r, x[order])["logits"]
        print(f"{art}:", " ".join(f"{v:.4f}" for v in softmax(z / t)[:, c]))


if __name__ == "__main__":
    typer.run(main)
