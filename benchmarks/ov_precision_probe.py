"""OpenVINO INT8: which float parts can run bf16 and still pass the gate, and what bf16 buys at batch 1.

  python benchmarks/ov_precision_probe.py [ARTIFACT.xml] [--checkpoint CK] [--rounds 8]

On a CPU with AVX-512 BF16 or AMX the CPU plugin runs an INT8 model's float parts (the float stem, BatchNorm/ReLU
chains, concatenations, the head) in bf16 unless told f32. This builds copies of the IR in which regions keep f32
while the rest runs bf16 (OpenVINO's `precise` runtime attribute, `ov::disable_fp16_compression`, which the CPU
plugin reads as "keep the original precision"), runs the export gate on each (the target's tolerance, the shipped
verification images, the FP32 checkpoint as reference) and times them interleaved at batch 1 (static shape, LATENCY
hint) with `benchmarks/latency_probe.py`'s rounds. Run with nothing else on the CPU.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

# regions of the exported Covid-DenseNet graph, by node name
BODY = re.compile(r"^/(conv0|relu0|pool0|denseblock|transition)")
DENSE = re.compile(r"^/(denseblock|transition)")
REGIONS = {  # variant -> the nodes kept f32 while the rest runs bf16 (None: none, the artifact as it is)
    "bf16": None,
    "bf16, head f32": lambda name: not BODY.match(name),
    "bf16, stem + head f32": lambda name: not DENSE.match(name),
}


def keep_f32(src: Path, dst: Path, pred) -> int:
    """Copy the IR ``src`` to ``dst`` with the nodes named by ``pred`` marked to keep f32; returns how many."""
    tree = ET.parse(src)
    n = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("type") in ("Const", "Parameter", "Result") or not pred(layer.get("name", "")):
            continue
        rt = layer.find("rt_info")
        if rt is None:
            rt = ET.Element("rt_info")
            layer.insert(0, rt)
        ET.SubElement(rt, "attribute", {"name": "precise", "version": "0"})  # DisableFP16Compression's IR name
        n += 1
    tree.write(dst)
    bin_ = dst.with_suffix(".bin")
    bin_.unlink(missing_ok=True)
    bin_.symlink_to(src.with_suffix(".bin").resolve())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", nargs="?", default="exports/covid-densenet-cxr3-76fa283b/openvino-int8/model.xml")
    ap.add_argument("--checkpoint", default=str(ROOT / "edgecxr/weights/covid-densenet-cxr3.safetensors"))
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()

    import openvino as ov

    from edgecxr.export.context import ExportContext
    from edgecxr.export.targets import load_target
    from edgecxr.export.verify import compare
    from edgecxr.hardware import cpu_info
    from edgecxr.runtime.batching import run_batched
    from edgecxr.runtime.runners import make_runner
    from edgecxr.sidecar import read_sidecar
    from latency_probe import interleaved

    src = Path(a.artifact)
    engine = read_sidecar(src).engine
    tgt = load_target("openvino-int8")
    ctx = ExportContext(Path(a.checkpoint), [ROOT / "calibration_data/calib"],
                        [ROOT / "calibration_data/val", ROOT / "calibration_data/eval"])
    x, y, ref = ctx.verify_set()
    cpu = cpu_info()
    print(f"# {src} (OpenVINO {ov.get_version()}); {cpu.get('model')}, {cpu.get('logical_cores')} logical cores, "
          f"ISA {', '.join(cpu.get('isa', []))}; {len(y)} gate images")
    tmp = Path(tempfile.mkdtemp(prefix="ov-precision-"))
    variants = {"f32 (the target)": (src, "f32")}
    for i, (name, pred) in enumerate(REGIONS.items()):
        p = src if pred is None else tmp / f"variant{i}.xml"
        if pred is not None:
            keep_f32(src, p, pred)
        variants[name] = (p, "bf16")
    core = ov.Core()
    for name, (p, prec) in variants.items():
        m = core.read_model(str(p))
        m.reshape({m.inputs[0].get_any_name(): [1] + list(x.shape[1:])})
        rt = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": prec}).get_runtime_model()
        n_bf16 = sum(str(op.get_rt_info()["runtimePrecision"].astype(str)) == "bf16" for op in rt.get_ordered_ops())
        with make_runner(p, dict(engine, inference_precision=prec)) as r:
            res = compare(ref, run_batched(r, x), y, tgt.tolerance, guard=ctx.guard, classes=ctx.classes,
                          operating_point=ctx.operating_point)
        op = res.get("operating_point", {})
        print(f"{name}: {n_bf16} bf16 nodes in the compiled graph; gate {res['verdict']}: argmax flips {res['flips']}, "
              f"findings at the operating point {op.get('finding_agreement', float('nan')):.4f}, "
              f"COVID-19 sensitivity {op.get('sensitivity', float('nan')):.4f} (FP32 {op.get('sensitivity_reference', float('nan')):.4f}), "
              f"guard agreement {res.get('guard_agreement')}" + (f"; {'; '.join(res['reasons'])}" if res["reasons"] else ""),
              flush=True)
    print("\nbatch 1, interleaved (ms; the ratio is the f32 target's time over the variant's, per round):")
    interleaved([f"{p}:{prec}" for p, prec in variants.values()], rounds=a.rounds)
    print("(" + "; ".join(f"{p}: {name}" for name, (p, _) in variants.items()) + ")")


if __name__ == "__main__":
    main()
