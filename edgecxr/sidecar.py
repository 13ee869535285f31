"""The sidecar: one typed record beside each artifact (``<artifact>.edgecxr.json``). Torch-free.

Written by export, read by the runtime, bench and CLI. ``Sidecar.from_json`` validates every field
and names the one that is wrong; there is one definition of "verified" (:attr:`Sidecar.verified`)
and of the artifact's size (:attr:`Sidecar.total_bytes`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecxr.errors import ArtifactError

FORMAT_VERSION = 2
SUFFIX = ".edgecxr.json"
VERDICTS = ("passed", "failed", "skipped")
# graph rewrites an export target can apply (flags in the sidecar's ``engine``) and how reports name them
REWRITES = {"gray_stem": "gray stem (reads channel 0 only)", "pool_first": "transitions pool first",
            "stem_s2d": "stem as a conv of 2x2 pixel blocks"}


def sidecar_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def resolve_artifact(path: str | Path) -> Path:
    """``path`` itself, or for a folder (e.g. ``exports/<model>/onnx-int8``) the one artifact in it that has a
    sidecar beside it; an :class:`ArtifactError` if the folder holds none or several."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(f.with_name(f.name[: -len(SUFFIX)]) for f in path.glob("*" + SUFFIX))
    found = [f for f in found if f.is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ArtifactError(f"{path}: a folder with no exported artifact in it (no *{SUFFIX} beside a model file). "
                            "Give the model file, or export one with `edgecxr export CHECKPOINT --target onnx`.")
    raise ArtifactError(f"{path}: a folder with {len(found)} artifacts ({', '.join(f.name for f in found)}); "
                        "give the one you mean.")


class _Bad(ArtifactError):
    pass


def _need(d: Any, key: str, typ, where: str, optional: bool = False):
    if not isinstance(d, dict):
        raise _Bad(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d or d[key] is None:
        if optional:
            return None
        raise _Bad(f"{where}.{key}: missing")
    v = d[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if typ is int and isinstance(v, bool) or not isinstance(v, typ):
        raise _Bad(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}, got {type(v).__name__} {v!r:.60}")
    if typ is float and not math.isfinite(v) and key not in ("agreement", "accuracy", "accuracy_reference",
                                                             "accuracy_drop"):
        raise _Bad(f"{where}.{key}: not a finite number ({v})")
    return v


def _safe_name(name: str, where: str) -> str:
    """A file named by a sidecar must sit beside the artifact: no folders, no '..'."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise _Bad(f"{where}: {name!r} is not a plain file name beside the artifact")
    return name


@dataclass(frozen=True)
class FileRecord:
    file: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> "FileRecord":
        from edgecxr.artifact import sha256_file

        path = Path(path)
        return cls(path.name, path.stat().st_size, sha256_file(path))

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "FileRecord":
        sha = _need(d, "sha256", str, where)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _Bad(f"{where}.sha256: not a sha256 hex digest")
        size = _need(d, "bytes", int, where)
        if size < 0:
            raise _Bad(f"{where}.bytes: negative")
        return cls(_safe_name(_need(d, "file", str, where), where + ".file"), size, sha)


@dataclass
class Verification:
    """The export gate's result on images disjoint from calibration."""

    verdict: str = "skipped"
    reasons: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # agreement, accuracy, flips, intervals, image sets...

    @classmethod
    def from_dict(cls, d: dict, where: str = "verification") -> "Verification":
        verdict = _need(d, "verdict", str, where)
        if verdict not in VERDICTS:
            raise _Bad(f"{where}.verdict: {verdict!r} is not one of {VERDICTS}")
        reasons = d.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise _Bad(f"{where}.reasons: expected a list of strings")
        return cls(verdict, reasons, {k: v for k, v in d.items() if k not in ("verdict", "reasons")})

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": list(self.reasons), **self.details}

    def __getitem__(self, key: str):  # convenience for reports: v["agreement"]
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)


@dataclass
class Sidecar:
    classes: list[str]
    preprocess: dict
    artifact: FileRecord
    engine: dict  # backend, precision, batch range, input shape, engine version and what runs
    model: dict = field(default_factory=dict)  # arch, name
    extra_files: list[FileRecord] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: ["logits"])
    verification: Verification = field(default_factory=Verification)
    guard: dict | None = None  # content-check statistics and threshold (issue 11)
    operating_point: dict | None = None  # per-class thresholds and temperature (issue 14)
    heatmap: dict | None = None  # classifier weight/bias and map outputs for class-activation maps (issue 13)
    source_checkpoint: dict = field(default_factory=dict)
    target: dict = field(default_factory=dict)
    cache_key: str = ""
    export_seconds: float = 0.0
    created: str = ""
    edgecxr_version: str = ""
    format: int = FORMAT_VERSION

    # ---------------------------------------------------------------- derived
    @property
    def verified(self) -> bool:
        return self.verification.verdict == "passed"

    @property
    def total_bytes(self) -> int:
        return self.artifact.bytes + sum(f.bytes for f in self.extra_files)

    @property
    def backend(self) -> str:
        return self.engine["backend"]

    @property
    def precision(self) -> str:
        return self.engine["precision"]

    # ---------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["artifact"] = asdict(self.artifact)
        d["extra_files"] = [asdict(f) for f in self.extra_files]
        d["verification"] = self.verification.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "sidecar") -> "Sidecar":
        if not isinstance(d, dict):
            raise _Bad(f"{where}: expected a JSON object")
        fmt = _need(d, "format", int, where)
        if fmt != FORMAT_VERSION:
            raise _Bad(f"{where}.format: version {fmt}, this edgecxr reads {FORMAT_VERSION}; re-export the model "
                       "with this edgecxr (or install the edgecxr that wrote it)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise _Bad(f"{where}: unknown field(s) {', '.join(unknown)}")
        classes = _need(d, "classes", list, where)
        if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
            raise _Bad(f"{where}.classes: expected distinct non-empty class names, got {classes!r:.80}")
        engine = _need(d, "engine", dict, where)
        from edgecxr.backends import REGISTRY

        if _need(engine, "backend", str, where + ".engine") not in REGISTRY:
            raise _Bad(f"{where}.engine.backend: {engine['backend']!r} is not one of {', '.join(REGISTRY)}")
        _need(engine, "precision", str, where + ".engine")
        mb = _need(engine, "max_batch", int, where + ".engine", optional=True)
        if mb is not None and mb < 1:
            raise _Bad(f"{where}.engine.max_batch: must be >= 1, got {mb}")
        off = _need(engine, "disabled_optimizers", list, where + ".engine", optional=True) or []
        if not all(isinstance(o, str) for o in off):
            raise _Bad(f"{where}.engine.disabled_optimizers: expected optimizer names, got {off!r:.80}")
        extra = _need(d, "extra_files", list, where, optional=True) or []
        outputs = _need(d, "outputs", list, where, optional=True) or ["logits"]
        if "logits" not in outputs or not all(isinstance(o, str) for o in outputs):
            raise _Bad(f"{where}.outputs: must name 'logits' among string output names")
        return cls(
            classes=classes, preprocess=_need(d, "preprocess", dict, where),
            artifact=FileRecord.from_dict(_need(d, "artifact", dict, where), where + ".artifact"),
            engine=engine, model=_need(d, "model", dict, where, optional=True) or {},
            extra_files=[FileRecord.from_dict(e, f"{where}.extra_files[{i}]") for i, e in enumerate(extra)],
            outputs=outputs,
            verification=Verification.from_dict(_need(d, "verification", dict, where), where + ".verification"),
            guard=_need(d, "guard", dict, where, optional=True),
            operating_point=_need(d, "operating_point", dict, where, optional=True),
            heatmap=_need(d, "heatmap", dict, where, optional=True),
            source_checkpoint=_need(d, "source_checkpoint", dict, where, optional=True) or {},
            target=_need(d, "target", dict, where, optional=True) or {},
            cache_key=_need(d, "cache_key", str, where, optional=True) or "",
            export_seconds=_need(d, "export_seconds", float, where, optional=True) or 0.0,
            created=_need(d, "created", str, where, optional=True) or "",
            edgecxr_version=_need(d, "edgecxr_version", str, where, optional=True) or "", format=fmt)

    @classmethod
    def from_json(cls, text: str, where: str = "sidecar") -> "Sidecar":
        try:
            return cls.from_dict(json.loads(text), where)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{where}: not valid JSON ({exc}).") from exc


def read_sidecar(artifact: Path) -> Sidecar:
    """The artifact's sidecar, validated; an :class:`ArtifactError` that names the bad field otherwise."""
    side = sidecar_path(artifact)
    if not side.is_file():
        raise ArtifactError(f"{artifact}: no sidecar {side.name} beside it. Export the model with `edgecxr export`, "
                            "which writes both; an artifact without its sidecar is not trusted.")
    try:
        return Sidecar.from_json(side.read_text(), where=str(side))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{side}: not a text file ({exc}).") from exc


def write_sidecar(artifact: Path, sidecar: Sidecar) -> None:
    from edgecxr.artifact import atomic_write_bytes

    atomic_write_bytes(sidecar_path(artifact), sidecar.to_json().encode())
