"""An artifact's verdict holds for the class of CPU it was verified on. Torch-free.

INT8 kernels, and OpenVINO's default bf16 precision, are chosen at run time from the CPU's ISA: an INT8 artifact
verified on an AVX-512 VNNI CPU runs other kernels on an AVX2-only one, where u8 x s8 products can saturate
(``benchmarks/emulated_isa.py`` measures it). So the export gate records the ISA class it ran on and the FP32
reference outputs on its images. On a CPU of another class, :func:`check_cpu` refuses such an artifact until
:func:`verify_here` (``edgecxr verify ARTIFACT``) has re-run the gate on this CPU against that reference - no torch
and no checkpoint needed - and written a passed record beside the artifact (``<artifact>.edgecxr-cpu.json``,
bound to the artifact's and the sidecar's sha256, so a signed sidecar stays untouched).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgecxr.errors import ArtifactError
from edgecxr.sidecar import Sidecar, read_sidecar, resolve_artifact, sidecar_path

RECORD_SUFFIX = ".edgecxr-cpu.json"


def isa_dependent(engine: dict) -> bool:
    """True when the artifact's numbers depend on the CPU's integer / bf16 extensions."""
    backend, precision = engine.get("backend"), engine.get("precision")
    if backend == "onnx":
        return precision == "int8"
    if backend == "openvino":
        return precision != "fp32"  # int8, and fp16 (runs bf16 where the CPU has it, f32 elsewhere)
    return False


def reference_record(digests: list[str], labels: np.ndarray, ref: dict[str, np.ndarray]) -> dict:
    """The gate's images (sha256), labels and FP32 reference outputs, for re-verification without torch."""
    rec: dict = {"sha256": list(digests), "labels": [int(v) for v in np.asarray(labels).reshape(-1)]}
    for name in ("logits", "guard"):
        if name in ref:
            rec[name] = np.round(np.asarray(ref[name], np.float64), 6).tolist()
    return rec


def describe(isa: dict | None) -> str:
    return f"{isa['arch']} with {', '.join(isa['isa']) or 'no VNNI/AVX-512/BF16'}" if isa else "an unrecorded CPU"


def record_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + RECORD_SUFFIX)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_records(artifact: Path) -> list[dict]:
    """This artifact's per-CPU verification records (an unreadable file counts as none)."""
    p = record_path(artifact)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data.get("records", []) if isinstance(r, dict)] if isinstance(data, dict) else []


def _matching(artifact: Path, side: Sidecar, isa: dict) -> dict | None:
    side_sha = _sha(sidecar_path(artifact))
    for r in read_records(artifact):
        if r.get("isa") == isa and r.get("artifact_sha256") == side.artifact.sha256 and r.get("sidecar_sha256") == side_sha:
            return r
    return None


def check_cpu(artifact: Path, side: Sidecar, isa: dict | None = None) -> None:
    """Raise :class:`ArtifactError` unless the artifact's verdict covers this CPU's ISA class."""
    if not isa_dependent(side.engine):
        return
    from edgecxr.hardware import isa_class

    isa = isa or isa_class(backend=side.engine.get("backend"))
    gate_isa = side.verification.get("isa")
    if gate_isa == isa:
        return
    what = f"{side.engine.get('backend')} {side.engine.get('precision')}"
    if gate_isa is None:
        raise ArtifactError(f"{artifact}: this {what} artifact does not record which CPU its gate ran on (exported by an "
                            "older edgecxr); re-export it: `edgecxr export CHECKPOINT --target ...`.")
    rec = _matching(artifact, side, isa)
    if rec and rec.get("verdict") == "passed":
        return
    if rec:
        raise ArtifactError(f"{artifact}: failed its gate on this CPU ({describe(isa)}): {'; '.join(rec.get('reasons', []))}. "
                            f"It passed on {describe(gate_isa)}. Export it on a CPU like this one (the export adapts its "
                            "quantization to the CPU it runs on) or use an FP32 artifact.")
    raise ArtifactError(f"{artifact}: verified on {describe(gate_isa)}; this CPU is {describe(isa)}, and {what} kernels "
                        f"differ between them. Re-run its gate here first: `edgecxr verify {artifact}` (no torch needed), "
                        "or export on this machine.")


def verify_here(artifact: Path, image_dirs: list[Path] | None = None,
                progress: Callable[[int], None] | None = None) -> dict:
    """Re-run the artifact's export gate on this CPU against the FP32 reference in its sidecar; record the result."""
    from edgecxr.artifact import sha256_file
    from edgecxr.export.targets import Tolerance
    from edgecxr.export.verify import compare
    from edgecxr.hardware import cpu_info, isa_class
    from edgecxr.resources import verification_dirs
    from edgecxr.runtime import iter_images, load
    from edgecxr.runtime.batching import run_batched

    artifact = resolve_artifact(artifact)
    side = read_sidecar(artifact)
    ver = side.verification.to_dict()
    ref = ver.get("reference")
    if side.verification.verdict != "passed":
        raise ArtifactError(f"{artifact}: its export gate says {side.verification.verdict}; only a verified artifact can "
                            "be re-verified on another CPU. Re-export it.")
    if not ref or "logits" not in ref:
        raise ArtifactError(f"{artifact}: its sidecar holds no reference outputs (exported by an older edgecxr); re-export it.")
    dirs = [Path(d) for d in (image_dirs or verification_dirs())]
    by_sha = {sha256_file(p): p for p in iter_images(dirs)}
    missing = [d for d in ref["sha256"] if d not in by_sha]
    if missing:
        raise ArtifactError(f"{len(missing)} of the {len(ref['sha256'])} gate images are not under "
                            f"{', '.join(map(str, dirs))} (matched by sha256); pass the folders the artifact was "
                            "verified on with --images.")
    with load(artifact, allow_unverified=True) as m:
        x = np.stack([m.prepare(by_sha[d]) for d in ref["sha256"]])
        outs = run_batched(m.runner, x, progress=progress)
        runs = m.runner.info
    refd = {k: np.asarray(ref[k], np.float64) for k in ("logits", "guard") if k in ref}
    res = compare(refd, outs, np.asarray(ref["labels"]), Tolerance(**ver["tolerance"]), guard=side.guard,
                  classes=side.classes, operating_point=side.operating_point)
    isa = isa_class(backend=side.engine.get("backend"))
    record = {"isa": isa, "cpu": cpu_info()["model"], "artifact_sha256": side.artifact.sha256,
              "sidecar_sha256": _sha(sidecar_path(artifact)), "runs": runs,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              **{k: res.get(k) for k in ("verdict", "reasons", "images", "agreement", "flips", "flip_rate_ci95",
                                         "accuracy_reference", "accuracy", "guard_agreement", "operating_point")}}
    records = [r for r in read_records(artifact) if r.get("isa") != isa] + [record]
    tmp = record_path(artifact).with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": records}, indent=1, default=str))
    os.replace(tmp, record_path(artifact))
    return record
