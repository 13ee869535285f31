"""The embeddable runtime: ``load(artifact) -> Model``; ``Model.predict(inputs) -> [Prediction]``.

Torch-free (numpy, Pillow, pydicom and one inference engine). No network access; nothing is
written to disk except the audit log you ask for. Before first use the artifact is checked against
its sidecar (:mod:`edgecxr.sidecar`): file size and sha256, the verification verdict, the
signature when trusted keys are configured, and the classes, preprocessing, guard, operating point
and verdict embedded in the artifact against the sidecar's. A mismatch raises
:class:`~edgecxr.errors.ArtifactError`; it never yields a silent wrong answer.

Every input gets one :class:`Prediction` with a ``status``:

* ``ok`` - a finding, with probabilities (temperature-calibrated when the model carries a
  temperature), the argmax ``label`` and the ``finding`` at the model's operating point;
* ``rejected`` - the input guard refused it (DICOM header rules, or the content score above its
  threshold): no finding, a ``reason`` a technologist can act on;
* ``error`` - it could not be read or run: no finding, the ``reason``.

Threads: one ``Model`` may be shared by several threads calling ``predict``. Close it (or use it
as a context manager) to free the engine's memory.

    from edgecxr.runtime import load
    with load("exports/.../model.onnx") as model:
        for p in model.predict(["a.png", "b.dcm"]):
            print(p.source, p.status, p.finding, p.probabilities, p.reason)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgecxr.artifact import verify_artifact_bytes
from edgecxr.errors import ArtifactError, EdgeCXRError, ImageError
from edgecxr.imaging import input_name, load_gray
from edgecxr.preprocess import PreprocessConfig, preprocess
from edgecxr.runtime.batching import chunks, softmax
from edgecxr.runtime.header_rules import HeaderRules
from edgecxr.runtime.image_rules import ImageRules
from edgecxr.runtime.operating_point import finding_at
from edgecxr.sidecar import Sidecar, read_sidecar, resolve_artifact

__all__ = ["load", "Model", "Prediction", "PREDICTION_SCHEMA_VERSION"]
PREDICTION_SCHEMA_VERSION = 1
STATUSES = ("ok", "rejected", "error")


@dataclass
class Prediction:
    source: str
    status: str = "error"
    label: str | None = None  # argmax class
    finding: str | None = None  # class at the operating point (== label when the model has none)
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why rejected / error
    guard_score: float | None = None
    notes: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    heatmap: Any = field(default=None, repr=False)  # (H, W) CAM of the finding in [0, 1], when asked for

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        """The reason when the input failed (kept for callers of the first API)."""
        return self.reason if self.status == "error" else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("heatmap")
        d["schema_version"] = PREDICTION_SCHEMA_VERSION
        return d


def check_replicated_gray(x: np.ndarray, cfg: PreprocessConfig, tol: float = 1e-3) -> None:
    """An artifact exported with ``gray_stem`` reads channel 0 only: refuse tensors whose channels are not the one gray
    image normalised per channel, as :func:`edgecxr.preprocess.preprocess` makes them (it would answer for another
    image than the one given)."""
    m, sd = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
    gray = x[:, :1] * sd[0] + m[0]
    want = (gray - m[None, :, None, None]) / sd[None, :, None, None]
    if x.size and float(np.max(np.abs(x - want))) > tol:
        raise ValueError("this artifact was exported with gray_stem (it reads channel 0 only) and these tensors' 3 "
                         "channels are not one gray image normalised per channel: pass them through "
                         "edgecxr.preprocess.preprocess, or re-export without gray_stem")


class Model:
    """A verified artifact with its runner. Use :func:`load` to make one."""

    def __init__(self, path: Path, sidecar: Sidecar, runner, guard: bool = True, isolate_decoding: bool | str = False,
                 audit: str | Path | None = None) -> None:
        self.path, self.sidecar, self.runner = path, sidecar, runner
        self.classes: list[str] = sidecar.classes
        self.preprocess_config = PreprocessConfig.from_dict(sidecar.preprocess)
        self.guard_enabled = guard
        self.header_rules = HeaderRules.from_dict((sidecar.guard or {}).get("header_rules"))
        self.image_rules = ImageRules.from_dict((sidecar.guard or {}).get("image_rules"))
        self.operating_point = sidecar.operating_point or {}
        self.identity = {"name": sidecar.model.get("name"), "arch": sidecar.model.get("arch"),
                         "artifact": path.name, "sha256": sidecar.artifact.sha256,
                         "backend": sidecar.backend, "precision": sidecar.precision}
        self._decoder = None
        if isolate_decoding:
            from edgecxr.runtime.isolation import IsolatedDecoder

            self._decoder = IsolatedDecoder(formats=isolate_decoding if isinstance(isolate_decoding, str) else "dicom")
        self._audit = None
        if audit:
            from edgecxr.runtime.audit import AuditLog

            self._audit = AuditLog(audit)

    @property
    def max_batch(self) -> int:
        return self.runner.max_batch

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.runner.close()
        if self._decoder is not None:
            self._decoder.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ inputs
    def check_header(self, item: Any) -> str | None:
        """The header rules' reason to refuse a DICOM input (None for other inputs or when it passes)."""
        if not (self.guard_enabled and isinstance(item, (str, Path))):
            return None
        from edgecxr.imaging import is_dicom, read_dicom_header

        p = Path(item)
        if not p.is_file() or not is_dicom(p):
            return None
        ds = read_dicom_header(p)
        return None if ds is None else self.header_rules.check(ds)

    def prepare(self, item: Any, notes: dict | None = None, gray: np.ndarray | None = None) -> np.ndarray:
        """Decode (unless ``gray``, from :meth:`decode`, is given) and preprocess one input: (3, S, S) float32.
        Raises :class:`ImageError` only."""
        return self._preprocess(item, self.decode(item, notes) if gray is None else gray)

    def decode(self, item: Any, notes: dict | None = None) -> np.ndarray:
        """One input as the runtime reads it: float32 (H, W) in [0, 1]. Raises :class:`ImageError` only."""
        if self._decoder is not None and isinstance(item, (str, Path)):
            return self._decoder.load_gray(item, notes)
        return load_gray(item, notes)

    def _preprocess(self, item: Any, g: np.ndarray) -> np.ndarray:
        try:
            return preprocess(g, self.preprocess_config)
        except Exception as exc:
            raise ImageError(f"{input_name(item)}: preprocessing failed ({type(exc).__name__}: {exc}).") from exc

    def predict(self, inputs: Any, batch: int | None = None, heatmaps: bool = False) -> list[Prediction]:
        """Classify one input or many (paths, numpy arrays, PIL images). One result per input, in order;
        an input that cannot be read or is refused gets its own status and the others are still classified.
        Never raises for a bad input. ``heatmaps=True`` adds each finding's class-activation map."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        bsz = max(1, min(batch or self.max_batch, self.max_batch))
        results = [Prediction(source=_name(it, i), model=self.identity) for i, it in enumerate(items)]
        t0 = time.perf_counter()
        ready: list[tuple[int, np.ndarray]] = []
        for i, it in enumerate(items):
            try:
                reason = self.check_header(it)
                if not reason:
                    g = self.decode(it, results[i].notes)
                    reason = self.image_rules.check(g) if self.guard_enabled else None
                if reason:
                    results[i].status, results[i].reason = "rejected", reason
                    continue
                ready.append((i, self._preprocess(it, g)))
            except Exception as exc:  # ImageError by contract; anything else is still this input's error
                results[i].status = "error"
                results[i].reason = str(exc) if isinstance(exc, EdgeCXRError) else f"{type(exc).__name__}: {exc}"
        self._classify(ready, results, bsz, heatmaps)
        if self._audit is not None:
            per = (time.perf_counter() - t0) * 1000 / max(1, len(items))
            for it, r in zip(items, results):
                self._audit.record(it, r, latency_ms=per)
        return results

    def predict_preprocessed(self, x: np.ndarray, batch: int | None = None) -> list[Prediction]:
        """Classify tensors that already went through :func:`edgecxr.preprocess.preprocess` ((N, 3, S, S))."""
        x = np.asarray(x, np.float32)
        s = self.preprocess_config.size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"expected (N, 3, {s}, {s}) preprocessed tensors, got {x.shape}")
        if self.sidecar.engine.get("gray_stem"):
            check_replicated_gray(x, self.preprocess_config)
        results = [Prediction(source=f"<tensor #{i}>", model=self.identity) for i in range(len(x))]
        self._classify(list(enumerate(x)), results, max(1, min(batch or self.max_batch, self.max_batch)))
        return results

    # ------------------------------------------------------------------ outputs
    def _finding(self, p: np.ndarray) -> str:
        op = self.operating_point
        pos, thr = op.get("positive_class"), op.get("threshold")
        if pos in self.classes and thr is not None:
            return self.classes[int(finding_at(p, self.classes, pos, thr)[0])]
        return self.classes[int(p.argmax())]

    def _classify(self, ready: list[tuple[int, np.ndarray]], results: list[Prediction], bsz: int,
                  heatmaps: bool = False) -> None:
        guard = self.sidecar.guard if self.guard_enabled else None
        temp = float(self.operating_point.get("temperature", 1.0) or 1.0)
        for a, b in chunks(len(ready), bsz):
            chunk = ready[a:b]
            try:
                x = np.stack([t for _, t in chunk])
                outs = self.runner.run(x)
                logits = np.asarray(outs["logits"], np.float64)
                scores = np.asarray(outs["guard"], np.float64).reshape(-1) if "guard" in outs else None
            except Exception as exc:  # engine failure: report for these inputs, keep going
                for i, _ in chunk:
                    results[i].status, results[i].reason = "error", f"inference failed: {type(exc).__name__}: {exc}"
                continue
            for n, (i, _) in enumerate(chunk):
                r = results[i]
                z = logits[n]
                if not np.all(np.isfinite(z)) or (scores is not None and not np.isfinite(scores[n])):
                    r.status, r.reason = "error", "the model produced non-finite outputs for this input; no finding"
                    continue
                if scores is not None:
                    r.guard_score = float(scores[n])
                if guard and scores is not None and scores[n] > guard["threshold"]:
                    r.status = "rejected"
                    r.reason = (f"unlike the training X-rays: score {scores[n]:.3g} > {guard['threshold']:.3g} "
                                "(not a frontal chest radiograph, or one the model cannot read)")
                    continue
                p = softmax((z / temp)[None])[0]
                r.status = "ok"
                r.label = self.classes[int(p.argmax())]
                r.finding = self._finding(p)
                r.probabilities = {c: float(v) for c, v in zip(self.classes, p)}
                if heatmaps and self.sidecar.heatmap:
                    from edgecxr.runtime.heatmap import class_activation_map, normalise

                    maps = [np.asarray(outs[k][n]) for k in self.sidecar.heatmap["outputs"]]
                    r.heatmap = normalise(class_activation_map(maps, self.sidecar.heatmap, self.classes.index(r.finding)))


def _name(item: Any, i: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} #{i}>"


def check_embedded(path: Path, side: Sidecar, embedded: dict | None) -> None:
    """The artifact's own copy of classes, preprocessing, guard, operating point and verdict must match the sidecar's."""
    if embedded is None:
        return
    wanted = {"classes": side.classes, "preprocess": side.preprocess}
    if side.guard is not None or "guard" in embedded:
        wanted["guard"] = side.guard
    if side.operating_point is not None or "operating_point" in embedded:
        wanted["operating_point"] = side.operating_point
    if side.heatmap is not None or "heatmap" in embedded:
        wanted["heatmap"] = side.heatmap
    if "verification" in embedded:
        wanted["verification"] = {"verdict": side.verification.verdict}
    elif side.verified:
        raise ArtifactError(f"{path}: the sidecar says verified but the artifact carries no verdict; re-export it.")
    for key, want in wanted.items():
        if key not in embedded:
            raise ArtifactError(f"{path}: the artifact carries no edgecxr '{key}'; re-export it.")
        have = embedded[key] if key != "verification" else {"verdict": embedded[key].get("verdict")}
        if have != want:
            raise ArtifactError(f"{path}: the sidecar's {key} differ from the artifact's; refusing to guess which is "
                                "right (was the sidecar edited?). Re-export the model.")


def load(path: str | Path, *, allow_unverified: bool = False, guard: bool = True, isolate_decoding: bool | str = False,
         trusted_keys: list | None = None, audit: str | Path | None = None, **runner_options) -> Model:
    """Verify an artifact against its sidecar and return a ready :class:`Model`.

    ``guard=False`` turns the input guard off (not for patients). ``isolate_decoding=True`` decodes DICOM files
    in a worker process, so a crashing native decoder costs one input, not the process; ``"all"`` every file.
    ``trusted_keys`` (Ed25519 public keys, PEM bytes or paths; default from ``EDGECXR_TRUSTED_KEYS``)
    makes the artifact's signature mandatory. ``audit`` appends one JSON line per input to that file.
    ``runner_options`` go to the engine's runner (e.g. ``threads=2``; for OpenVINO ``inference_precision="f32"``).
    """
    from edgecxr.runtime.runners import make_runner
    from edgecxr.signing import check_signature, trusted_keys_from_env

    if isinstance(isolate_decoding, str) and isolate_decoding not in ("dicom", "all"):
        raise ValueError(f"isolate_decoding must be True/False, 'dicom' or 'all', not {isolate_decoding!r}")
    path = resolve_artifact(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact. Export one with `edgecxr export CHECKPOINT --target onnx`.")
    side = read_sidecar(path)
    verify_artifact_bytes(path, side)
    keys = trusted_keys if trusted_keys is not None else trusted_keys_from_env()
    if keys:
        check_signature(path, keys)
    if not side.verified and not allow_unverified:
        raise ArtifactError(f"{path}: export verification {side.verification.verdict}; the artifact is not trusted. "
                            "Re-export it, or use it anyway with --allow-unverified (CLI) / "
                            "allow_unverified=True (Python) - not for patients.")
    if not allow_unverified:
        from edgecxr.runtime.isa import check_cpu

        check_cpu(path, side)  # an INT8 verdict holds for the CPU class it was reached on
    runner = make_runner(path, side.engine, **runner_options)
    try:
        check_embedded(path, side, runner.metadata())
        missing = set(side.outputs) - {"logits"} - set(_output_names(runner))
        if missing:
            raise ArtifactError(f"{path}: the sidecar names outputs {sorted(missing)} the artifact lacks; re-export it.")
    except BaseException:
        runner.close()
        raise
    return Model(path, side, runner, guard=guard, isolate_decoding=isolate_decoding, audit=audit)


def _output_names(runner) -> list[str]:
    return list(getattr(runner, "_outputs", None) or getattr(runner, "_outs", None) or ["logits", "guard"])


def iter_images(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Expand folders into the image files under them (sorted); files are kept as given.

    In a folder, a file is an image by its suffix or, whatever its name (PACS exports and DICOM media use names like
    ``IM0001``), by the DICOM preamble; DICOMDIR index files are not images. Other files go to ``skipped``. A broken
    link with an image suffix is kept, so that its input reports the missing file instead of vanishing."""
    from edgecxr.imaging import IMAGE_SUFFIXES, is_dicom

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file() or (f.is_symlink() and not f.exists())):
                if f.suffix.lower() in IMAGE_SUFFIXES or (f.exists() and f.name.upper() != "DICOMDIR" and is_dicom(f)):
                    out.append(f)
                elif skipped is not None:
                    skipped.append(f)
        else:
            out.append(p)
    return out
