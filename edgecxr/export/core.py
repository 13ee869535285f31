"""``export()``: checkpoint -> artifact + sidecar, for any target in ``export/``.

The backend's builder comes from :mod:`edgecxr.backends` (one module per format, no per-target
branches: a target file only sets options). Steps, each a named function:
``cache_key`` -> ``find_cached`` -> build -> ``verify_artifact`` -> ``install``.

Atomic: everything is built in a temporary folder inside ``out``; files move into place only after
the build (and verification) finished, and the sidecar is written last. The old sidecar is removed
before files are replaced, so an interrupted export never leaves an artifact that looks valid.
Temporary folders left by a killed export are removed by the next export into the same folder.
Cached: an export whose checkpoint, target settings (tolerance included), calibration and
verification images and edgecxr version match an existing sidecar is reused unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgecxr import __version__
from edgecxr.artifact import sha256_file, verify_artifact_bytes
from edgecxr.backends import get_backend
from edgecxr.errors import ArtifactError, EdgeCXRError
from edgecxr.export.context import ExportContext
from edgecxr.export.targets import Target, load_target, resolve_target
from edgecxr.hardware import isa_class
from edgecxr.resources import calibration_dir, verification_dirs
from edgecxr.sidecar import FileRecord, Sidecar, Verification, read_sidecar, sidecar_path, write_sidecar

TMP_PREFIX = ".tmp-export-"


@dataclass
class ExportResult:
    artifact: Path
    sidecar: Sidecar
    cached: bool

    @property
    def verified(self) -> bool:
        return self.sidecar.verified


def image_digests(dirs: list[Path]) -> dict[str, str]:
    """sha256 -> relative path of every file under ``dirs``."""
    out = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".csv":
                out[sha256_file(p)] = str(p)
    return out


def check_disjoint(calib_dirs: list[Path], verify_dirs: list[Path]) -> None:
    """Refuse a gate that verifies on its own calibration images (compared by content, not by name)."""
    both = set(image_digests(calib_dirs)) & set(image_digests(verify_dirs))
    if both:
        raise EdgeCXRError(f"{len(both)} verification image(s) are also calibration images (same sha256); the gate "
                           "would flatter INT8. Pass disjoint folders to --calib and --verify-on.")


def _digest(dirs: list[Path]) -> str:
    return hashlib.sha256(json.dumps(sorted(image_digests(dirs))).encode()).hexdigest()


GATE_VERSION = 2  # 2: the sidecar records the gate's CPU class and FP32 reference outputs (edgecxr verify)


def cache_key(ck_sha: str, tgt: Target, calib_dirs: list[Path], verify_dirs: list[Path], guard: dict | None,
              isa: dict | None = None) -> str:
    """Everything a verdict depends on; for ISA-dependent CPU artifacts (INT8, OpenVINO FP16) also the CPU's ISA
    class, so an export copied to a machine with other kernels is rebuilt and re-verified there."""
    from edgecxr.export.onnx_build import KEEP_FLOAT_OFF
    from edgecxr.runtime.isa import isa_dependent

    cpu_int8 = isa_dependent({"backend": tgt.backend, "precision": tgt.precision})  # INT8; OpenVINO FP16 runs bf16 or f32
    # the session rewrites an ONNX INT8 sidecar turns off decide what runs: a new list means a new build and gate
    ort_off = KEEP_FLOAT_OFF if (tgt.backend, tgt.precision) == ("onnx", "int8") else None
    return hashlib.sha256(json.dumps({
        "checkpoint": ck_sha, "target": tgt.key, "calib": _digest(calib_dirs) if tgt.precision == "int8" else None,
        "verify": _digest(verify_dirs), "guard": guard, "edgecxr": __version__, "gate": GATE_VERSION,
        "isa": (isa or isa_class(backend=tgt.backend)) if cpu_int8 else None, **({"ort_off": ort_off} if ort_off else {})},
        sort_keys=True, default=str).encode()
    ).hexdigest()


def default_out(checkpoint: Path, ck_sha: str, target: Target) -> Path:
    return Path("exports") / f"{Path(checkpoint).stem}-{ck_sha[:8]}" / target.name


def find_cached(artifact: Path, key: str, verify: bool) -> Sidecar | None:
    if not sidecar_path(artifact).is_file():
        return None
    try:
        side = read_sidecar(artifact)
        verify_artifact_bytes(artifact, side)
    except ArtifactError:
        return None
    if side.cache_key == key and (side.verified or not verify or side.verification.verdict == "failed"):
        return side
    return None


def remove_stale_tmp(out: Path) -> list[Path]:
    """Delete temporary build folders whose export process no longer runs (e.g. after kill -9)."""
    removed = []
    for d in Path(out).glob(TMP_PREFIX + "*"):
        try:
            pid = int(d.name[len(TMP_PREFIX):].split("-")[0])
            os.kill(pid, 0)
            continue  # that export is still running
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            if time.time() - d.stat().st_mtime < 24 * 3600:
                continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def verify_artifact(ctx: ExportContext, built: Path, engine: dict, tgt: Target) -> Verification:
    """Run the built artifact through its runtime runner on the verification images; compare with FP32 torch."""
    from edgecxr.export.verify import compare
    from edgecxr.runtime.batching import run_batched
    from edgecxr.runtime.runners import make_runner

    x, y, ref = ctx.verify_set()
    with make_runner(built, engine) as runner:
        engine["runs"] = runner.info
        outs = run_batched(runner, x, progress=ctx.progress)
    res = compare(ref, outs, y, tgt.tolerance, guard=ctx.guard, heatmap=ctx.heatmap_record(), classes=ctx.classes,
                  operating_point=ctx.operating_point)
    res["image_sets"] = [str(d) for d in ctx.verify_dirs]
    res["calibration_sets"] = [str(d) for d in ctx.calib_dirs] if tgt.precision == "int8" else []
    if tgt.backend in ("onnx", "openvino"):  # CPU engines: what `edgecxr verify` re-checks on another CPU
        from edgecxr.runtime.isa import reference_record

        res["isa"] = isa_class(backend=tgt.backend)
        res["reference"] = reference_record(ctx.verify_digests(), y, ref)
    return Verification.from_dict(res)


def install(tmp: Path, out: Path, built: Path, backend) -> tuple[Path, list[Path]]:
    """Move the built files into ``out`` (old sidecar removed first)."""
    artifact = out / built.name
    sidecar_path(artifact).unlink(missing_ok=True)
    extras = backend.extra_files(built)
    for f in [built, *extras, *tmp.glob("model.trt-*.onnx")]:
        os.replace(f, out / f.name)
    return artifact, [out / e.name for e in extras]


def export(checkpoint: str | Path, target: str | Target, precision: str | None = None, batch: int | None = None,
           dynamic: bool | None = None, calib: list[Path] | None = None, verify_on: list[Path] | None = None,
           out: Path | None = None, verify: bool = True, force: bool = False, progress=None,
           heatmaps: bool | None = None, step=None) -> ExportResult:
    """Export ``checkpoint`` for ``target``; return the artifact, its sidecar and whether it was cached.

    Raises :class:`~edgecxr.errors.BackendUnavailable` when the engine is missing (the prepared
    ONNX for TensorRT is still written to ``out``), and returns an unverified result when the
    verification gate fails (``result.verified`` is False; the sidecar says why).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EdgeCXRError(f"{checkpoint}: no such checkpoint. Train one (`edgecxr train`) or use the shipped default.")
    tgt = resolve_target(target if isinstance(target, Target) else load_target(target, precision, batch, dynamic, heatmaps))
    backend = get_backend(tgt.backend)
    calib_dirs = [Path(p) for p in (calib or [calibration_dir()])]
    verify_dirs = [Path(p) for p in (verify_on or verification_dirs())]
    if verify and tgt.precision == "int8":
        check_disjoint(calib_dirs, verify_dirs)
    from edgecxr.checkpoint import read_meta

    ck_sha = sha256_file(checkpoint)
    key = cache_key(ck_sha, tgt, calib_dirs, verify_dirs, read_meta(checkpoint).get("guard"))
    out = Path(out) if out else default_out(checkpoint, ck_sha, tgt)
    artifact = out / backend.artifact_name
    if not force and (side := find_cached(artifact, key, verify)) is not None:
        return ExportResult(artifact, side, cached=True)

    t0 = time.perf_counter()
    ctx = ExportContext(checkpoint, calib_dirs, verify_dirs, progress, heatmaps=tgt.heatmaps, step=step)
    ctx.gray_stem, ctx.pool_first, ctx.stem_s2d = tgt.gray_stem, tgt.pool_first, tgt.stem_s2d
    ctx.say(f"{tgt.name}: building")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=out))
    try:
        if tgt.precision == "int8" and tgt.int8.exclude:
            from edgecxr.export.onnx_int8 import check_node_names

            check_node_names(list(tgt.int8.exclude), ctx.fp32_onnx(tgt, tmp))
        built, engine = backend.build_function()(ctx, tgt, tmp)
        engine.update({"backend": tgt.backend, "precision": tgt.precision, "dynamic_batch": tgt.dynamic_batch,
                       "min_batch": tgt.min_batch, "max_batch": tgt.max_batch,
                       "input_shape": [-1 if tgt.dynamic_batch else tgt.max_batch, 3, ctx.size, ctx.size],
                       **({"gray_stem": True} if tgt.gray_stem else {}),
                       **({"pool_first": True} if tgt.pool_first else {}),
                       **({"stem_s2d": True} if tgt.stem_s2d else {})})
        export_s = time.perf_counter() - t0
        ctx.say(f"{tgt.name}: verifying")
        verification = verify_artifact(ctx, built, engine, tgt) if verify else Verification()
        if verification.verdict == "failed" and tgt.precision == "int8" and tgt.int8.mixed_precision:
            from edgecxr.export.mixed import search_float_layers

            built, engine, verification = search_float_layers(ctx, tgt, tmp, built, engine, verification)
        stamp = backend.stamp_function()
        if stamp is not None:  # the verdict travels inside the artifact too: a sidecar-only edit is detected
            stamp(built, dict(ctx.metadata(), verification={"verdict": verification.verdict}))
        artifact, extras = install(tmp, out, built, backend)
        side = Sidecar(
            classes=ctx.classes, preprocess=ctx.pcfg.to_dict(), artifact=FileRecord.of(artifact), engine=engine,
            model={"arch": ctx.meta["arch"], "name": checkpoint.stem}, extra_files=[FileRecord.of(e) for e in extras],
            outputs=ctx.outputs, verification=verification, guard=ctx.guard_public(), heatmap=ctx.heatmap_record(),
            operating_point=ctx.operating_point,
            source_checkpoint={"file": checkpoint.name, "sha256": ck_sha},
            target={"name": tgt.name, "description": tgt.description}, cache_key=key,
            export_seconds=round(export_s, 2), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            edgecxr_version=__version__)
        write_sidecar(artifact, side)
        return ExportResult(artifact, side, cached=False)
    except BaseException:
        # keep what TensorRT would have parsed, so it can be built on the device with trtexec
        for f in tmp.glob("model.trt-*.onnx"):
            os.replace(f, out / f.name)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
