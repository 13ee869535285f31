"""Which layers' INT8 quantization moves the logits: ONNX Runtime's Q/DQ form of a checkpoint (Conv/Gemm int8, as
OpenVINO's ``ort-qdq`` source and TensorRT read it), each quantized conv kept float in turn, the logit RMS error left
against FP32 on the calibration images. Also prints the SQNR of each conv's output, the ranking the search used before.

    python benchmarks/int8_sensitivity.py CHECKPOINT [--calibration percentile] [--images 24] [--group 1]
        [--reduce-range] [--out FILE.md]

``--group 1`` measures every conv alone (about 140 ONNX Runtime sessions: minutes on 2 cores); larger groups are what
the export search does (``edgecxr/export/sensitivity.py``)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import typer


def main(checkpoint: Path, calibration: str = "percentile", images: int = 24, group: int = 1, top: int = 12,
         reduce_range: bool = typer.Option(False, help="7-bit weights, as on x86 CPUs without VNNI"),
         out: Path | None = None) -> None:
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecxr.export.context import ExportContext
    from edgecxr.export.onnx_int8 import _Reader, quantize_onnx
    from edgecxr.export.sensitivity import rank_by_logits
    from edgecxr.export.targets import load_target
    from edgecxr.resources import calibration_dir
    from edgecxr.hardware import isa_class

    ctx = ExportContext(checkpoint, [calibration_dir()], [])
    x = ctx.calib()[:images]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        pre = tmp / "pre.onnx"
        quant_pre_process(str(ctx.fp32_onnx(load_target("onnx-int8"), tmp)), str(pre), skip_symbolic_shape=True)
        qdq = quantize_onnx(pre, tmp / "qdq.onnx", ctx.calib(), fmt="qdq", method=calibration, preprocessed=True,
                            reduce_range=reduce_range)
        t0 = time.perf_counter()
        ranked, records = rank_by_logits(pre, qdq, x, group=group, refine=10 ** 6 if group == 1 else 2)
        seconds = time.perf_counter() - t0
        # the old ranking, for comparison: SQNR of each conv's output against the float graph
        aug_f, aug_q = tmp / "f.onnx", tmp / "q.onnx"
        dbg.modify_model_output_intermediate_tensors(str(pre), str(aug_f), op_types_for_saving=["Conv", "Gemm"])
        dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug_q), op_types_for_saving=["Conv", "Gemm"])
        name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        act_f = dbg.collect_activations(str(aug_f), _Reader(x, name))
        act_q = dbg.collect_activations(str(aug_q), _Reader(x, name))
        producer = {o: n.name for n in onnx.load(str(pre), load_external_data=False).graph.node for o in n.output}
    sqnr = {}
    for tensor in set(act_f) & set(act_q):
        f, q = (np.concatenate([np.ravel(a) for a in acts[tensor]]) for acts in (act_f, act_q))
        noise = float(np.sum((f - q) ** 2))
        sqnr[producer.get(tensor, tensor)] = 10 * np.log10(np.sum(f ** 2) / noise) if noise > 0 else float("inf")
    by_sqnr = sorted(sqnr, key=sqnr.get)
    singles = {r["float"][0]: r["logit_rms"] for r in records if len(r["float"]) == 1}
    base = records[0]["logit_rms"]
    bits = "7-bit weights" if reduce_range else "8-bit weights"
    lines = [f"# INT8 sensitivity: {checkpoint.name} (ONNX Runtime Q/DQ, {calibration} calibration, Conv/Gemm int8, "
             f"{bits})", "",
             f"`python benchmarks/int8_sensitivity.py {checkpoint} --calibration {calibration} --images {images} "
             f"--group {group}{' --reduce-range' if reduce_range else ''}`; ISA: {', '.join(isa_class()['isa'])}; {len(records)} sessions in {seconds:.0f} s.", "",
             f"Logit RMS error against FP32 on {len(x)} calibration images with every conv int8: **{base:.4f}**.", "",
             "| rank | conv kept float | logit RMS left | rank by output SQNR (old search) |", "|---|---|---|---|"]
    for i, n in enumerate(ranked[:top]):
        rms = f"{singles[n]:.4f}" if n in singles else "(group only)"
        lines.append(f"| {i + 1} | `{n}` | {rms} | {by_sqnr.index(n) + 1 if n in by_sqnr else '-'} |")
    lines += ["", "The old search's first four (lowest output SQNR):", ""]
    lines += [f"- `{n}`: SQNR {sqnr[n]:.1f} dB, logit RMS left with it float "
              f"{singles[n]:.4f}" if n in singles else f"- `{n}`: SQNR {sqnr[n]:.1f} dB" for n in by_sqnr[:4]]
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)


if __name__ == "__main__":
    typer.run(main)
