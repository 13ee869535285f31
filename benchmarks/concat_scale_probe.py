"""ONNX INT8: one scale per dense block's concatenations (`[int8] shared_concat_scales`), one block at a time.

    python benchmarks/concat_scale_probe.py [ARTIFACT.onnx]

`shared_concat_scales` gives every tensor that meets in a QLinearConcat one scale per group (a dense block), so ONNX
Runtime copies instead of requantizing (QLinearConcat is ~22% of onnx-int8's time: benchmarks/results/profile-onnx-
int8-76fa283b-epyc.md); for the whole model it failed the gate. This applies it to one block's concatenations at a
time on the exported artifact (the other concatenations untouched) and reports the logit error on the calibration
images and the export gate's verdict on the shipped verification images, against the FP32 checkpoint.
"""
import sys
import numpy as np
from pathlib import Path
import onnx
from edgecxr.export.context import ExportContext
from edgecxr.export.targets import load_target
from edgecxr.export.verify import compare
from edgecxr.export import mixed, onnx_int8
from edgecxr.runtime.batching import run_batched
from edgecxr.runtime.runners import make_runner
from edgecxr.sidecar import read_sidecar
src = Path(sys.argv[1] if len(sys.argv) > 1 else "exports/covid-densenet-cxr3-76fa283b/onnx-int8/model.onnx")
eng = read_sidecar(src).engine
tgt = load_target("onnx-int8")
ctx = ExportContext(Path("edgecxr/weights/covid-densenet-cxr3.safetensors"), [Path("calibration_data/calib")],
                    [Path("calibration_data/val"), Path("calibration_data/eval")])
x, y, ref = ctx.verify_set()
cref = mixed._calib_reference(ctx)
def restricted(dst, blocks):
    # share only groups whose QLinearConcat nodes lie in the given blocks: hide other concats by renaming op type temporarily
    m = onnx.load(str(src))
    hidden = []
    for n in m.graph.node:
        if n.op_type == "QLinearConcat" and not any(n.name.startswith(f"/{b}/") for b in blocks):
            n.op_type = "QLinearConcatHidden"; hidden.append(n.name)
    onnx.save(m, str(dst))
    c = onnx_int8.share_concat_scales(dst)
    m = onnx.load(str(dst))
    for n in m.graph.node:
        if n.op_type == "QLinearConcatHidden": n.op_type = "QLinearConcat"
    onnx.save(m, str(dst))
    return c
import tempfile
out = Path(tempfile.mkdtemp(prefix="concat-scales-"))
sets = [(b,) for b in ("denseblock1", "denseblock2", "denseblock3", "denseblock4")]
for blocks in sets:
    d = out / "_".join(b[-1] for b in blocks); d.mkdir(exist_ok=True)
    p = d / "model.onnx"
    c = restricted(p, blocks)
    with make_runner(p, eng) as r:
        outs = run_batched(r, x)
        cl = run_batched(r, ctx.calib())["logits"]
    res = compare(ref, outs, y, tgt.tolerance, guard=ctx.guard, classes=ctx.classes, operating_point=ctx.operating_point)
    op = res.get("operating_point", {})
    print(blocks, f"changed {c}; calib logit error {mixed.logit_error(cref, cl):.5f}; gate {res['verdict']}: flips {res['flips']}, findings {op.get('finding_agreement'):.4f}, acc {res['accuracy']:.4f} vs {res['accuracy_reference']:.4f}", res['reasons'], flush=True)
