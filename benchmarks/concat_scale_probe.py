"""ONNX INT8: one scale per dense block's concatenations (`[int8] shared_concat_scales`), one block at a time.

    python benchmarks/concat_scale_probe.py [ARTIFACT.onnx]

`shared_concat_scales` gives every tensor that meets in a QLinearConcat one scale per group (a dense block), so ONNX
Runtime copies instead of requantizing (QLinearConcat is ~22% of onnx-int8's time: benchmarks/results/profile-onnx-
int8-76fa283b-epyc.md); for the whole model it failed the gate. This applies it to one block's concatenations at a
time on the exported artifact (the other concatenations untouched) and reports the logit error on the calibration
images and the export gate's verdict on the shipped verification images, against the FP32 checkpoint.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ("denseblock1", "denseblock2", "denseblock3", "denseblock4")


def main() -> None:
    from edgecxr.export import mixed
    from edgecxr.export.context import ExportContext
    from edgecxr.export.onnx_int8 import share_concat_scales
    from edgecxr.export.targets import load_target
    from edgecxr.export.verify import compare
    from edgecxr.runtime.batching import run_batched
    from edgecxr.runtime.runners import make_runner
    from edgecxr.sidecar import read_sidecar

    src = Path(sys.argv[1] if len(sys.argv) > 1 else "exports/covid-densenet-cxr3-76fa283b/onnx-int8/model.onnx")
    engine = read_sidecar(src).engine
    tgt = load_target("onnx-int8")
    ctx = ExportContext(ROOT / "edgecxr/weights/covid-densenet-cxr3.safetensors", [ROOT / "calibration_data/calib"],
                        [ROOT / "calibration_data/val", ROOT / "calibration_data/eval"])
    x, y, ref = ctx.verify_set()
    calib_ref = mixed._calib_reference(ctx)
    tmp = Path(tempfile.mkdtemp(prefix="concat-scales-"))
    for block in BLOCKS:
        p = tmp / f"{block}.onnx"
        shutil.copyfile(src, p)
        changed = share_concat_scales(p, only=(f"/{block}/",))
        with make_runner(p, engine) as r:
            outs = run_batched(r, x)
            calib_logits = run_batched(r, ctx.calib())["logits"]
        res = compare(ref, outs, y, tgt.tolerance, guard=ctx.guard, classes=ctx.classes,
                      operating_point=ctx.operating_point)
        op = res.get("operating_point", {})
        print(f"('{block}',) changed {changed}; calib logit error {mixed.logit_error(calib_ref, calib_logits):.5f}; "
              f"gate {res['verdict']}: flips {res['flips']}, findings {op.get('finding_agreement'):.4f}, "
              f"acc {res['accuracy']:.4f} vs {res['accuracy_reference']:.4f}", res["reasons"], flush=True)


if __name__ == "__main__":
    main()
