"""Export targets: TOML files in ``export/`` (one per deployment target), resolved by name or path."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgecxr.errors import EdgeCXRError
from edgecxr.resources import targets_dir

BACKENDS = ("onnx", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TOLERANCE = {"fp32": (0.995, 0.005), "fp16": (0.995, 0.005), "int8": (0.98, 0.01)}


@dataclass
class Target:
    name: str
    backend: str
    precision: str
    dynamic_batch: bool = True
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 64
    opset: int = 18
    int8: dict = field(default_factory=dict)
    openvino: dict = field(default_factory=dict)
    tensorrt: dict = field(default_factory=dict)
    tolerance: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EdgeCXRError(f"target {self.name}: backend {self.backend!r} is not one of {BACKENDS}.")
        if self.precision not in PRECISIONS:
            raise EdgeCXRError(f"target {self.name}: precision {self.precision!r} is not one of {PRECISIONS}.")
        agree, drop = DEFAULT_TOLERANCE[self.precision]
        self.tolerance = {"min_agreement": agree, "max_accuracy_drop": drop, **self.tolerance}

    @property
    def key(self) -> dict:
        """Everything that changes the artifact (for the export cache)."""
        d = copy.deepcopy(self.__dict__)
        d.pop("description", None)
        d.pop("tolerance", None)
        return d


def list_targets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(targets_dir().glob("*.toml"))}


def load_target(name_or_path: str, precision: str | None = None, batch: int | None = None,
                dynamic: bool | None = None) -> Target:
    """Resolve a target by name (``export/NAME.toml``), by backend name, or by path; apply overrides.

    A bare backend name (``onnx``, ``openvino``, ``tensorrt``) picks ``BACKEND-PRECISION`` (fp32 for
    onnx/openvino, fp16 for tensorrt unless ``precision`` says otherwise).
    """
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        path = p
    else:
        available = list_targets()
        name = name_or_path
        if name in BACKENDS:
            name = f"{name}-{precision or ('fp16' if name == 'tensorrt' else 'fp32')}"
            precision = None
        if name not in available:
            raise EdgeCXRError(f"unknown target {name_or_path!r}; available: {', '.join(available)} "
                               "(or pass a .toml file).")
        path = available[name]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgeCXRError(f"{path}: invalid TOML ({exc}).") from exc
    data.setdefault("name", path.stem)
    if precision:
        if precision != data.get("precision"):
            data["name"] = f"{data['backend']}-{precision}"
        data["precision"] = precision
    if batch:
        data.update(dynamic_batch=False, min_batch=batch, opt_batch=batch, max_batch=batch)
    if dynamic is True:
        data["dynamic_batch"] = True
    try:
        return Target(**data)
    except TypeError as exc:
        raise EdgeCXRError(f"{path}: unknown key ({exc}).") from exc
