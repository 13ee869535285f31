"""Why INT8 targets keep the stem conv float, and whether splitting its weights (``[int8] split_weights``) is enough.

    python benchmarks/stem_quant_probe.py [CHECKPOINT] [--images 48] [--verify-images 96]

1. torch fake quantization on calibration images, logit RMS against FP32: the stem's input at 8 bits (per tensor,
   symmetric, as ONNX Runtime's Q/DQ form does), its weights per channel at 8 and 7 bits, and the split pair.
2. ONNX Runtime's Q/DQ twin of the whole network (percentile calibration, as openvino-int8), logit RMS and argmax flips
   on verification images: the stem float, all int8, the stem split.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import typer


def main(checkpoint: Path = Path("edgecxr/weights/covid-densenet-cxr3.safetensors"), images: int = 48,
         verify_images: int = 96) -> None:
    import onnxruntime as ort
    import torch

    from edgecxr.export.calib import load_images
    from edgecxr.export.context import ExportContext
    from edgecxr.export.onnx_int8 import quantize_onnx
    from edgecxr.export.targets import load_target
    from edgecxr.hardware import isa_class
    from edgecxr.resources import calibration_dir

    torch.set_num_threads(2)
    verify_dirs = [calibration_dir().parent / "val", calibration_dir().parent / "eval"]
    ctx = ExportContext(checkpoint, [calibration_dir()], verify_dirs)
    model = ctx.model
    x = torch.from_numpy(ctx.calib()[:images])
    print(f"# python benchmarks/stem_quant_probe.py {checkpoint} --images {images} --verify-images {verify_images}"
          f"  (ISA {', '.join(isa_class().get('isa', []))})\n")
    with torch.no_grad():
        ref = model(x)

    def rms(m, xin=x) -> float:
        with torch.no_grad():
            return float(((m(xin) - ref) ** 2).mean().sqrt())

    def fq_input(t):  # per-tensor symmetric int8, the Q/DQ form's input quantizer
        s = float(t.abs().max()) / 127
        return torch.clamp(torch.round(t / s), -127, 127) * s

    def qw(w, q):
        s = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) / q
        return torch.round(w / s).clamp(-q, q) * s

    w = model.backbone.conv0.weight.detach()
    rows = [("the stem's input at 8 bits", rms(model, fq_input(x)))]
    for bits, q in ((8, 127), (7, 64)):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.backbone.conv0.weight.copy_(qw(w, q))
        rows.append((f"the stem's weights at {bits} bits (per channel)", rms(m)))
        with torch.no_grad():
            hi = qw(w, q)
            m.backbone.conv0.weight.copy_(hi + qw(w - hi, q))
        rows.append((f"the stem's weights split into two {bits}-bit halves", rms(m)))
    print(f"| torch, {images} calibration images: quantized | logit RMS vs FP32 |\n|---|---|")
    for what, v in rows:
        print(f"| {what} | {v:.4f} |")

    xv = load_images(verify_dirs, ctx.pcfg, ctx.classes)[0][:verify_images]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2

    def logits(p: Path) -> np.ndarray:
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(["logits"], {s.get_inputs()[0].name: xv[i:i + 16]})[0] for i in range(0, len(xv), 16)])

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        fp32 = ctx.fp32_onnx(load_target("onnx-fp32"), tmp)
        lref = logits(fp32)
        print(f"\n| ONNX Runtime Q/DQ twin (percentile), {len(xv)} verification images | logit RMS | argmax flips |\n|---|---|---|")
        for label, kw in (("stem float", {"exclude": ["/conv0/Conv"]}), ("all int8", {}),
                          ("stem split", {"split_weights": ["/conv0/Conv"]})):
            q = quantize_onnx(fp32, tmp / "q.onnx", ctx.calib(), fmt="qdq", method="percentile", **kw)
            lq = logits(q)
            print(f"| {label} | {np.sqrt(((lq - lref) ** 2).mean()):.4f} | {int((lq.argmax(1) != lref.argmax(1)).sum())} |")


if __name__ == "__main__":
    typer.run(main)
