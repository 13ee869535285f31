"""Re-run an exported artifact's verification gate on an *emulated* CPU that lacks AVX-512 (and VNNI, BF16, AMX).

INT8 and bf16 kernels are chosen at run time from the CPU's ISA (CPUID), so an artifact verified on an AVX-512 VNNI
machine may compute differently on an AVX2-only one (u8 x s8 products saturate without VNNI). This runs the engine
under QEMU's user-mode emulator with ``-cpu Haswell`` (AVX2 + FMA, no AVX-512): the engine sees an AVX2-only CPU
and takes its AVX2 kernels. The gate's FP32 reference is computed natively, on the same images and tolerance as
the artifact's own gate (its sidecar). Speed under emulation means nothing (hundreds of times slower): only agreement.

    apt-get install qemu-user        # Debian's package; once
    python benchmarks/emulated_isa.py ARTIFACT [--cpu Haswell] [--limit N]

About 5 s per image for OpenVINO INT8 under emulation on one core (222 images: ~20 minutes).

``--via cap`` runs natively instead, with oneDNN capped to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``): OpenVINO's CPU plugin
then JITs the same AVX2 kernels an AVX2-only CPU gets (u8 x s8 saturation included), in seconds, and its speed is a
proxy for AVX2 kernels on this core. OpenVINO artifacts only: ONNX Runtime's MLAS reads CPUID and ignores the cap.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def engine_isa() -> dict:
    """What the libraries see of this CPU: numpy's CPUID probe, OpenVINO's capabilities."""
    from numpy._core._multiarray_umath import __cpu_features__ as f

    seen = {"numpy_cpuid": [k for k in ("AVX2", "FMA3", "AVX512F", "AVX512_ICL", "AVX512_SPR") if f.get(k)]}
    try:
        import openvino as ov

        seen["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        seen["openvino_capabilities"] = f"unavailable: {e}"
    return seen


def child(artifact: Path, x_path: Path, out: Path) -> None:
    """Inside the emulator: the artifact's outputs through the runtime's runner."""
    from edgecxr.runtime import load
    from edgecxr.runtime.batching import run_batched

    x = np.load(x_path)["x"]
    t0 = time.time()
    with load(artifact, allow_unverified=True) as m:  # a measurement: the CPU-class check would refuse it here
        outs = run_batched(m.runner, x, progress=lambda n: print(f"  {n} images", flush=True))
        info = dict(m.runner.info, kernels=kernels(m.runner))
    np.savez(out, **outs, _meta=json.dumps({"isa": engine_isa(), "runs": info, "seconds": time.time() - t0}))


def kernels(runner) -> list[str] | None:
    """The OpenVINO kernels that ran (e.g. jit_avx2_I8 vs brgconv_avx512_I8): the proof of which ISA was used."""
    compiled = [c for c in [getattr(runner, "_compiled", None), *getattr(runner, "_by_batch", {}).values()] if c]
    if not compiled:
        return None
    seen = set()
    for c in compiled:
        for op in c.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "primitiveType" in rt and rt["layerType"].astype(str) == "Convolution":
                seen.add(rt["primitiveType"].astype(str))
    return sorted(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="the artifact's source checkpoint (default: the shipped model)")
    ap.add_argument("--cpu", default="Haswell", help="QEMU CPU model (Haswell: AVX2 + FMA, no AVX-512)")
    ap.add_argument("--via", choices=("qemu", "cap"), default="qemu",
                    help="qemu: emulate the CPU (any engine); cap: native, oneDNN capped to AVX2 (OpenVINO only)")
    ap.add_argument("--limit", type=int, default=0, help="first N verification images only (0: all)")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.artifact, *a.child)
    qemu = shutil.which("qemu-x86_64")
    if a.via == "qemu" and qemu is None:
        sys.exit("qemu-x86_64 not found: apt-get install qemu-user (or --via cap for an OpenVINO artifact)")

    from edgecxr.artifact import sha256_file
    from edgecxr.export.context import ExportContext
    from edgecxr.export.targets import Tolerance
    from edgecxr.export.verify import compare
    from edgecxr.resources import default_checkpoint
    from edgecxr.sidecar import read_sidecar, resolve_artifact

    a.artifact = resolve_artifact(a.artifact)
    if a.via == "cap" and a.artifact.suffix != ".xml":
        sys.exit(f"{a.artifact}: --via cap caps oneDNN, which OpenVINO uses and ONNX Runtime does not; use --via qemu")
    side = read_sidecar(a.artifact)
    ver = side.verification.to_dict()
    if not ver.get("image_sets"):
        sys.exit(f"{a.artifact}: its sidecar records no verification images; export it with its gate first")
    ck = a.checkpoint or default_checkpoint()
    if sha256_file(ck) != side.source_checkpoint.get("sha256"):
        sys.exit(f"{ck} is not the checkpoint {a.artifact} was exported from; pass that one with --checkpoint")
    ctx = ExportContext(ck, [Path(p) for p in ver.get("calibration_sets") or []],
                        [Path(p) for p in ver["image_sets"]])
    x, y, ref = ctx.verify_set()
    if a.limit:
        x, y, ref = x[: a.limit], y[: a.limit], {k: v[: a.limit] for k, v in ref.items()}
    with tempfile.TemporaryDirectory() as tmp:
        xp, op = Path(tmp) / "x.npz", Path(tmp) / "outs.npz"
        np.savez(xp, x=x)
        cmd = [sys.executable, __file__, str(a.artifact), "--child", str(xp), str(op)]
        env = dict(os.environ)
        if a.via == "qemu":
            cmd = [qemu, "-cpu", a.cpu] + cmd
            print(f"{len(x)} images under `qemu-x86_64 -cpu {a.cpu}` ...", flush=True)
        else:
            env.update(ONEDNN_MAX_CPU_ISA="AVX2", DNNL_MAX_CPU_ISA="AVX2")
            print(f"{len(x)} images natively, oneDNN capped to AVX2 ...", flush=True)
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, env=env)
        got = dict(np.load(op))
    meta = json.loads(str(got.pop("_meta")))
    tol = Tolerance(**ver["tolerance"])
    res = compare(ref, got, y, tol, guard=ctx.guard, classes=ctx.classes, operating_point=ctx.operating_point)
    res.update(emulated_cpu=a.cpu if a.via == "qemu" else "native, ONEDNN_MAX_CPU_ISA=AVX2", seen_by_engine=meta["isa"], engine=meta["runs"], artifact=str(a.artifact),
               native_gate={k: ver.get(k) for k in ("agreement", "flips", "verdict", "guard_agreement")})
    res["convolution_kernels"] = meta["runs"].get("kernels")
    print(json.dumps({k: res[k] for k in ("emulated_cpu", "seen_by_engine", "convolution_kernels", "images", "agreement", "flips",
                                          "flip_rate_ci95", "accuracy_reference", "accuracy", "guard_agreement",
                                          "verdict", "reasons", "native_gate") if k in res}, indent=1, default=str))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
