"""``export()``: checkpoint -> artifact + sidecar, for any target in ``export/``.

One function per format (``_build_onnx``, ``_build_openvino``, ``_build_tensorrt``) and no
per-target branches: a target file only sets their options.

Atomic: everything is built in a temporary folder inside ``out``; files move into place only after
the build (and verification) finished, and the sidecar is written last. The old sidecar is removed
before files are replaced, so an interrupted export never leaves an artifact that looks valid.
Cached: an export whose checkpoint, target settings, calibration images and edgecxr version match
an existing verified sidecar is reused unless ``force``.
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

import numpy as np

from edgecxr import __version__
from edgecxr.artifact import (SIDECAR_FORMAT, atomic_write_json, file_record, read_sidecar, sha256_file, sidecar_path,
                              verify_artifact_bytes)
from edgecxr.errors import ArtifactError, EdgeCXRError
from edgecxr.export.targets import Target, load_target
from edgecxr.preprocess import PreprocessConfig
from edgecxr.resources import calibration_dir, eval_dir

ARTIFACT_NAMES = {"onnx": "model.onnx", "openvino": "model.xml", "tensorrt": "model.engine"}


@dataclass
class ExportResult:
    artifact: Path
    sidecar: dict
    cached: bool

    @property
    def verified(self) -> bool:
        return self.sidecar.get("verification", {}).get("verdict") == "passed"


class _Ctx:
    """What the format builders need: model, metadata, images, a progress callback."""

    def __init__(self, checkpoint: Path, calib_dirs: list[Path], verify_dirs: list[Path], progress) -> None:
        from edgecxr.checkpoint import load_model

        self.model, self.meta = load_model(checkpoint)
        self.classes = self.meta["classes"]
        self.pcfg = PreprocessConfig.from_dict(self.meta["preprocess"])
        self.calib_dirs, self.verify_dirs, self.progress = calib_dirs, verify_dirs, progress
        self._calib = self._verify = None

    @property
    def size(self) -> int:
        return self.pcfg.size

    def calib(self) -> np.ndarray:
        if self._calib is None:
            from edgecxr.export.calib import load_images

            self._calib = load_images(self.calib_dirs, self.pcfg, self.classes)[0]
        return self._calib

    def verify_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, labels, FP32 torch logits) for verification."""
        if self._verify is None:
            import torch

            from edgecxr.export.calib import load_images

            x, y, _ = load_images(self.verify_dirs, self.pcfg, self.classes)
            with torch.no_grad():
                ref = np.concatenate([self.model(torch.from_numpy(x[i : i + 16])).numpy() for i in range(0, len(x), 16)])
            self._verify = (x, y, ref)
        return self._verify

    def metadata(self) -> dict:
        return {"arch": self.meta["arch"], "classes": self.classes, "preprocess": self.pcfg.to_dict()}


# ------------------------------------------------------------------ format builders
def _fp32_onnx(ctx: _Ctx, target: Target, tmp: Path) -> Path:
    from edgecxr.export.onnx_fp32 import export_onnx

    path = tmp / "fp32.onnx"
    if not path.exists():
        export_onnx(ctx.model, path, size=ctx.size, opset=target.opset,
                    batch=None if target.dynamic_batch else target.max_batch, metadata=ctx.metadata())
    return path


def _stamp_onnx(path: Path, metadata: dict) -> None:
    import onnx

    from edgecxr.export.onnx_fp32 import set_metadata

    m = onnx.load(str(path))
    set_metadata(m, metadata)
    onnx.save(m, str(path))


def _resolve_reduce_range(value) -> bool:
    """``"auto"``: 7-bit weights on x86 CPUs without VNNI, where U8S8 products can saturate (vpmaddubsw)."""
    if value != "auto":
        return bool(value)
    from edgecxr.hardware import cpu_info

    cpu = cpu_info()
    vnni = any("VNNI" in f or "AMX" in f for f in cpu["isa"])
    return cpu["arch"] in ("x86_64", "AMD64") and not vnni


def _build_onnx(ctx: _Ctx, target: Target, tmp: Path) -> tuple[Path, dict]:
    import onnxruntime

    fp32 = _fp32_onnx(ctx, target, tmp)
    out = tmp / ARTIFACT_NAMES["onnx"]
    engine = {"version": onnxruntime.__version__}
    if target.precision == "fp32":
        shutil.copyfile(fp32, out)
    elif target.precision == "int8":
        from edgecxr.export.onnx_int8 import quantize_onnx

        fmt = target.int8.get("format", "qoperator")
        reduce_range = _resolve_reduce_range(target.int8.get("reduce_range", False))
        bn_to_conv = bool(target.int8.get("bn_to_conv", False))
        quantize_onnx(fp32, out, ctx.calib(), fmt=fmt, method=target.int8.get("calibration", "minmax"),
                      per_channel=target.int8.get("per_channel", True), reduce_range=reduce_range, bn_to_conv=bn_to_conv,
                      exclude=target.int8.get("exclude"))
        _stamp_onnx(out, ctx.metadata())
        engine["int8"] = {"format": fmt, "calibration": target.int8.get("calibration", "minmax"),
                          "calibration_images": int(len(ctx.calib())), "reduce_range": reduce_range,
                          "bn_to_conv": bn_to_conv, "excluded_nodes": target.int8.get("exclude", [])}
    else:
        from edgecxr.export.onnx_fp16 import cast_fp16

        cast_fp16(fp32, out)
        _stamp_onnx(out, ctx.metadata())
    return out, engine


def _build_openvino(ctx: _Ctx, target: Target, tmp: Path) -> tuple[Path, dict]:
    import openvino as ov

    from edgecxr.export.openvino_ir import to_openvino

    fp32 = _fp32_onnx(ctx, target, tmp)
    out = tmp / ARTIFACT_NAMES["openvino"]
    to_openvino(fp32, out, target.precision, calib=ctx.calib() if target.precision == "int8" else None,
                int8=target.int8, metadata=ctx.metadata())
    ovo = target.openvino
    engine = {"version": ov.get_version(), "device": ovo.get("device", "CPU"),
              "inference_precision": ovo.get("inference_precision", "default"),
              "performance_hint": ovo.get("performance_hint", "LATENCY")}
    return out, engine


def prepare_tensorrt_onnx(ctx: _Ctx, target: Target, tmp: Path) -> Path:
    """The ONNX that TensorRT parses: FP16-cast for fp16, symmetric Q/DQ for int8, plain for fp32."""
    fp32 = _fp32_onnx(ctx, target, tmp)
    out = tmp / f"model.trt-{target.precision}.onnx"
    if target.precision == "fp16":
        from edgecxr.export.onnx_fp16 import cast_fp16

        cast_fp16(fp32, out)
    elif target.precision == "int8":
        from edgecxr.export.onnx_int8 import quantize_onnx

        quantize_onnx(fp32, out, ctx.calib(), fmt="qdq", method=target.int8.get("calibration", "entropy"),
                      per_channel=target.int8.get("per_channel", True), exclude=target.int8.get("exclude"))
    else:
        shutil.copyfile(fp32, out)
    return out


def _build_tensorrt(ctx: _Ctx, target: Target, tmp: Path) -> tuple[Path, dict]:
    from edgecxr.export.onnx_fp32 import INPUT_NAME
    from edgecxr.export.tensorrt_engine import build_engine, require_tensorrt

    src = prepare_tensorrt_onnx(ctx, target, tmp)
    require_tensorrt()
    out = tmp / ARTIFACT_NAMES["tensorrt"]
    engine = build_engine(src, out, INPUT_NAME, ctx.size, target.min_batch, target.opt_batch, target.max_batch,
                          target.tensorrt)
    engine["source_onnx"] = src.name
    return out, engine


BUILDERS = {"onnx": _build_onnx, "openvino": _build_openvino, "tensorrt": _build_tensorrt}
FORMATS_TABLE = [  # (backend, precision, how)
    ("onnx", "fp32", "torch.onnx (opset 18, dynamic batch) + onnxslim"),
    ("onnx", "int8", "onnxruntime quantize_static, QOperator U8S8 per-channel"),
    ("openvino", "fp32", "ov.convert_model, compress_to_fp16=False"),
    ("openvino", "fp16", "ov.convert_model, FP16-compressed weights"),
    ("openvino", "int8", "NNCF post-training quantization"),
    ("tensorrt", "fp16", "FP16-cast ONNX -> strongly typed engine"),
    ("tensorrt", "int8", "symmetric Q/DQ ONNX -> strongly typed engine"),
]


# ------------------------------------------------------------------ orchestration
def _files_digest(dirs: list[Path]) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(d)}:{sha256_file(p)}".encode())
    return h.hexdigest()


def default_out(checkpoint: Path, ck_sha: str, target: Target) -> Path:
    return Path("exports") / f"{Path(checkpoint).stem}-{ck_sha[:8]}" / target.name


def _extra_files(backend: str, artifact: Path) -> list[Path]:
    return [artifact.with_suffix(".bin")] if backend == "openvino" else []


def export(checkpoint: str | Path, target: str | Target, precision: str | None = None, batch: int | None = None,
           dynamic: bool | None = None, calib: list[Path] | None = None, verify_on: list[Path] | None = None,
           out: Path | None = None, verify: bool = True, force: bool = False, progress=None) -> ExportResult:
    """Export ``checkpoint`` for ``target``; return the artifact, its sidecar and whether it was cached.

    Raises :class:`~edgecxr.errors.BackendUnavailable` when the engine is missing (the prepared
    ONNX for TensorRT is still written to ``out``), and returns an unverified result when the
    verification gate fails (``result.verified`` is False; the sidecar says why).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EdgeCXRError(f"{checkpoint}: no such checkpoint. Train one (`edgecxr train`) or use the shipped default.")
    tgt = target if isinstance(target, Target) else load_target(target, precision, batch, dynamic)
    calib_dirs = [Path(p) for p in (calib or [calibration_dir()])]
    verify_dirs = [Path(p) for p in (verify_on or [calibration_dir(), eval_dir()])]
    ck_sha = sha256_file(checkpoint)
    out = Path(out) if out else default_out(checkpoint, ck_sha, tgt)
    artifact = out / ARTIFACT_NAMES[tgt.backend]
    key = hashlib.sha256(json.dumps({
        "checkpoint": ck_sha, "target": tgt.key, "calib": _files_digest(calib_dirs) if tgt.precision == "int8" else None,
        "edgecxr": __version__}, sort_keys=True).encode()).hexdigest()

    if not force and sidecar_path(artifact).is_file():
        try:
            side = read_sidecar(artifact)
            verify_artifact_bytes(artifact, side)
            if side.get("cache_key") == key and (not verify or side.get("verification", {}).get("verdict") == "passed"):
                return ExportResult(artifact, side, cached=True)
        except ArtifactError:
            pass

    t0 = time.perf_counter()
    ctx = _Ctx(checkpoint, calib_dirs, verify_dirs, progress)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        built, engine = BUILDERS[tgt.backend](ctx, tgt, tmp)
        engine.update({"backend": tgt.backend, "precision": tgt.precision, "dynamic_batch": tgt.dynamic_batch,
                       "min_batch": tgt.min_batch, "max_batch": tgt.max_batch,
                       "input_shape": [-1 if tgt.dynamic_batch else tgt.max_batch, 3, ctx.size, ctx.size]})
        export_s = time.perf_counter() - t0
        verification: dict = {"verdict": "skipped"}
        if verify:
            from edgecxr.export.verify import compare, run_batched
            from edgecxr.runtime.runners import make_runner

            x, y, ref = ctx.verify_set()
            runner = make_runner(built, engine)
            engine["runs"] = runner.info
            logits = run_batched(runner, x, progress=progress)
            verification = compare(ref, logits, y, tgt.tolerance)
            verification["image_sets"] = [str(d) for d in verify_dirs]
            del runner
        # move into place: old sidecar first, then files, then the new sidecar
        sidecar_path(artifact).unlink(missing_ok=True)
        for f in [built, *_extra_files(tgt.backend, built)] + [p for p in tmp.glob("model.trt-*.onnx")]:
            os.replace(f, out / f.name)
        side = {
            "format": SIDECAR_FORMAT, "edgecxr_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": {"arch": ctx.meta["arch"], "name": checkpoint.stem}, "classes": ctx.classes,
            "preprocess": ctx.pcfg.to_dict(),
            "source_checkpoint": {"file": checkpoint.name, "sha256": ck_sha},
            "artifact": dict(file_record(artifact),
                             extra_files=[file_record(out / p.name) for p in _extra_files(tgt.backend, built)]),
            "engine": engine, "target": {"name": tgt.name, "description": tgt.description}, "cache_key": key,
            "export_seconds": round(export_s, 2), "verification": verification,
        }
        atomic_write_json(sidecar_path(artifact), side)
        return ExportResult(artifact, side, cached=False)
    except BaseException:
        # keep what TensorRT would have parsed, so it can be built on the device with trtexec
        for f in tmp.glob("model.trt-*.onnx"):
            os.replace(f, out / f.name)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
