"""The embeddable runtime: ``load(artifact) -> Model``; ``Model.predict(inputs) -> [Prediction]``.

Torch-free (numpy, Pillow, pydicom and one inference engine). No network access; nothing is
written to disk. Before first use the artifact is checked against its sidecar: file size and
sha256, the verification verdict, and the classes and preprocessing stored inside the artifact
(ONNX metadata props, OpenVINO rt_info) against the sidecar's. A mismatch raises
:class:`~edgecxr.errors.ArtifactError`; it never yields a silent wrong answer.

Threads: one ``Model`` may be shared by several threads calling ``predict`` (ONNX Runtime and
OpenVINO run concurrent requests on one compiled model; TensorRT calls are serialised).

    from edgecxr.runtime import load
    model = load("exports/.../model.onnx")
    for p in model.predict(["a.png", "b.dcm"]):
        print(p.source, p.label, p.probabilities, p.error)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgecxr.artifact import read_sidecar, verify_artifact_bytes
from edgecxr.errors import ArtifactError, EdgeCXRError
from edgecxr.imaging import load_gray
from edgecxr.preprocess import PreprocessConfig, preprocess

__all__ = ["load", "Model", "Prediction"]


@dataclass
class Prediction:
    source: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    model: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Model:
    """A verified artifact with its runner. Use :func:`load` to make one."""

    def __init__(self, path: Path, sidecar: dict, runner) -> None:
        self.path, self.sidecar, self.runner = path, sidecar, runner
        self.classes: list[str] = sidecar["classes"]
        self.preprocess_config = PreprocessConfig.from_dict(sidecar["preprocess"])
        self.identity = {"name": sidecar["model"].get("name"), "arch": sidecar["model"].get("arch"),
                         "artifact": path.name, "sha256": sidecar["artifact"]["sha256"],
                         "backend": sidecar["engine"]["backend"], "precision": sidecar["engine"]["precision"]}

    @property
    def max_batch(self) -> int:
        return self.runner.max_batch

    def _prepare(self, item: Any) -> np.ndarray:
        return preprocess(load_gray(item), self.preprocess_config)

    def predict(self, inputs: Any, batch: int | None = None) -> list[Prediction]:
        """Classify one input or many (paths, numpy arrays, PIL images). One result per input, in order;
        an input that cannot be read gets a result with ``error`` set and the others are still classified."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        bsz = max(1, min(batch or self.max_batch, self.max_batch))
        results: list[Prediction] = [Prediction(source=_name(it, i), model=self.identity) for i, it in enumerate(items)]
        ready: list[tuple[int, np.ndarray]] = []
        for i, it in enumerate(items):
            try:
                ready.append((i, self._prepare(it)))
            except (EdgeCXRError, ValueError) as exc:
                results[i].error = str(exc)
        self._classify(ready, results, bsz)
        return results


    def predict_preprocessed(self, x: np.ndarray, batch: int | None = None) -> list[Prediction]:
        """Classify tensors that already went through :func:`edgecxr.preprocess.preprocess` ((N, 3, S, S))."""
        x = np.asarray(x, np.float32)
        s = self.preprocess_config.size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"expected (N, 3, {s}, {s}) preprocessed tensors, got {x.shape}")
        results = [Prediction(source=f"<tensor #{i}>", model=self.identity) for i in range(len(x))]
        self._classify(list(enumerate(x)), results, max(1, min(batch or self.max_batch, self.max_batch)))
        return results

    def _classify(self, ready: list[tuple[int, np.ndarray]], results: list[Prediction], bsz: int) -> None:
        for start in range(0, len(ready), bsz):
            chunk = ready[start : start + bsz]
            try:
                x = chunk[0][1][None] if len(chunk) == 1 else np.stack([t for _, t in chunk])
                probs = _softmax(np.asarray(self.runner.run(x), np.float64))
            except Exception as exc:  # engine failure: report for these inputs, keep going
                for i, _ in chunk:
                    results[i].error = f"inference failed: {type(exc).__name__}: {exc}"
                continue
            for (i, _), p in zip(chunk, probs):
                results[i].label = self.classes[int(p.argmax())]
                results[i].probabilities = {c: float(v) for c, v in zip(self.classes, p)}


def _name(item: Any, i: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} #{i}>"


def load(path: str | Path, *, allow_unverified: bool = False, **runner_options) -> Model:
    """Verify an artifact against its sidecar and return a ready :class:`Model`.

    ``runner_options`` go to the engine's runner (e.g. ``threads=2``; for OpenVINO
    ``inference_precision="f32"``).
    """
    from edgecxr.runtime.runners import make_runner

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact. Export one with `edgecxr export CHECKPOINT --target onnx`.")
    side = read_sidecar(path)
    verify_artifact_bytes(path, side)
    verdict = side.get("verification", {}).get("verdict")
    if verdict != "passed" and not allow_unverified:
        raise ArtifactError(f"{path}: export verification {verdict or 'missing'}; the artifact is not trusted. "
                            "Re-export it, or pass allow_unverified=True to use it anyway (not for patients).")
    runner = make_runner(path, side["engine"], **runner_options)
    embedded = runner.metadata()
    if embedded is not None:
        for key in ("classes", "preprocess"):
            if key not in embedded:
                raise ArtifactError(f"{path}: the artifact carries no edgecxr '{key}'; re-export it.")
            if embedded[key] != side[key]:
                raise ArtifactError(f"{path}: the sidecar's {key} ({side[key]}) differ from the artifact's "
                                    f"({embedded[key]}); refusing to guess which is right. Re-export the model.")
    return Model(path, side, runner)


def iter_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the image files under them (sorted); files are kept as given."""
    from edgecxr.imaging import IMAGE_SUFFIXES

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out
