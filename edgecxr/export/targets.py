"""Export targets: TOML files in ``export/`` (one per deployment target), resolved by name or path.

Every table is typed: an unknown key or a bad value in a target file is an error that names the file
and the key. The backends come from :mod:`edgecxr.backends`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgecxr.backends import REGISTRY
from edgecxr.errors import EdgeCXRError
from edgecxr.resources import targets_dir

PRECISIONS = ("fp32", "fp16", "int8")
# (min agreement, max accuracy drop) by precision. INT8 defaults follow issue 10: >= 99% agreement,
# <= 0.5 point accuracy drop, on verification images disjoint from the calibration images.
DEFAULT_TOLERANCE = {"fp32": (0.995, 0.005), "fp16": (0.995, 0.005), "int8": (0.99, 0.005)}


class TargetError(EdgeCXRError):
    pass


def _typed(cls, data: dict, where: str):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name ``where.key``."""
    if not isinstance(data, dict):
        raise TargetError(f"{where}: expected a table")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    obj = cls(**data)
    defaults = cls()
    for name in data:
        want, got = type(getattr(defaults, name)), data[name]
        if getattr(defaults, name) is None or isinstance(getattr(defaults, name), list) or names[name].type == "Any":
            continue
        if want is float and isinstance(got, int) and not isinstance(got, bool):
            continue
        if not isinstance(got, want) or (want is int and isinstance(got, bool)):
            raise TargetError(f"{where}.{name}: expected {want.__name__}, got {got!r}")
    try:
        obj.check()
    except ValueError as exc:
        raise TargetError(f"{where}: {exc}") from None
    return obj


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} must be {', '.join(allowed[:-1])} or {allowed[-1]}")


@dataclass
class Int8Options:
    format: str = "qoperator"  # qoperator (ONNX Runtime CPU) | qdq (TensorRT, and ORT's Q/DQ form)
    calibration: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    reduce_range: Any = False  # true | false | "auto" (7-bit weights on x86 CPUs without VNNI)
    bn_to_conv: bool = False
    shared_concat_scales: bool = False  # qoperator: one scale per group of concatenated tensors (faster; see onnx_int8.py)
    exclude: list = field(default_factory=list)  # ONNX node names kept in float
    split_weights: list = field(default_factory=list)  # Conv names run as two int8 convs (weights' int8 grid + rest; onnx_int8.py)
    preset: str = "performance"  # NNCF: performance | mixed
    source: str = "nncf"  # OpenVINO INT8 from NNCF (nncf) or from ONNX Runtime's Q/DQ quantization (ort-qdq)
    subset_size: int = 300
    fast_bias_correction: bool = True
    mixed_precision: bool = True  # keep the most sensitive layers in float until the gate passes
    max_float_layers: int = 12
    search_minutes: float = 10.0

    def check(self) -> None:
        _one_of("format", self.format, ("qoperator", "qdq"))
        _one_of("calibration", self.calibration, ("minmax", "entropy", "percentile"))
        if self.reduce_range not in (True, False, "auto"):
            raise ValueError(f"reduce_range {self.reduce_range!r} must be true, false or \"auto\"")
        _one_of("preset", self.preset, ("performance", "mixed"))
        _one_of("source", self.source, ("nncf", "ort-qdq"))
        if not all(isinstance(n, str) for n in self.exclude):
            raise ValueError("exclude must be a list of node names")
        if not all(isinstance(n, str) for n in self.split_weights):
            raise ValueError("split_weights must be a list of Conv node names")
        if set(self.split_weights) & set(self.exclude):
            raise ValueError(f"split_weights and exclude both name {sorted(set(self.split_weights) & set(self.exclude))}: "
                             "a conv is either kept float or split, not both")
        if self.subset_size < 1:
            raise ValueError("subset_size must be >= 1")


@dataclass
class OpenVINOOptions:
    device: str = "CPU"
    inference_precision: str = "default"  # default | f32 | bf16 | f16
    performance_hint: str = "LATENCY"  # LATENCY | THROUGHPUT
    static_shapes: bool = False  # runtime compiles a fixed-batch model per batch size (faster; the gate verifies that)

    def check(self) -> None:
        _one_of("inference_precision", self.inference_precision, ("default", "f32", "bf16", "f16"))
        _one_of("performance_hint", self.performance_hint, ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"))


@dataclass
class TensorRTOptions:
    workspace_mib: int = 2048
    timing_cache: str = ""
    dla_core: int = -1
    hardware_compatibility: str = "none"  # none | ampere_plus | same_compute_capability
    version_compatible: bool = False

    def check(self) -> None:
        _one_of("hardware_compatibility", self.hardware_compatibility,
                ("none", "ampere_plus", "same_compute_capability"))
        if self.workspace_mib < 1:
            raise ValueError("workspace_mib must be >= 1")


@dataclass
class Tolerance:
    min_agreement: float = 0.995
    max_accuracy_drop: float = 0.005
    min_guard_agreement: float = 0.99  # accept/reject decisions of the input guard vs FP32
    max_op_sensitivity_drop: float = 0.01  # positive-class sensitivity at the operating point vs FP32 (issue 14)
    # the finding the runtime reports (operating point) vs FP32's: images near the threshold can change it with the
    # argmax unchanged, and with a low threshold many images lie near it
    min_finding_agreement: float = 0.99

    def check(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise ValueError("min_agreement must lie in [0, 1]")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("max_accuracy_drop must lie in [0, 1]")
        if not 0 <= self.max_op_sensitivity_drop <= 1:
            raise ValueError("max_op_sensitivity_drop must lie in [0, 1]")
        if not 0 <= self.min_finding_agreement <= 1:
            raise ValueError("min_finding_agreement must lie in [0, 1]")


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
    heatmaps: bool = False  # also output the classifier's spatial maps (for --heatmaps); costs latency in some engines
    gray_stem: bool | str = False  # fold the gray->3-channel replication into the stem conv (edgecxr/export/gray_stem.py);
    # "auto": on x86 CPUs with VNNI / AMX only (resolve_target)
    pool_first: bool = False  # average-pool before the transitions' 1x1 convs (edgecxr/export/pool_first.py)
    stem_s2d: bool = False  # with gray_stem: the stem conv as a conv of 2x2 pixel blocks (edgecxr/export/gray_stem.py)
    int8: Int8Options = field(default_factory=Int8Options)
    openvino: OpenVINOOptions = field(default_factory=OpenVINOOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    tolerance: Tolerance = field(default_factory=Tolerance)
    description: str = ""

    @property
    def key(self) -> dict:
        """Everything that changes the artifact or its verdict (for the export cache): the tolerance included."""
        d = asdict(self)
        d.pop("description", None)
        return d


def list_targets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(targets_dir().glob("*.toml"))}


def target_from_dict(data: dict, where: str) -> Target:
    """A validated :class:`Target` from a TOML document's data."""
    data = dict(data)
    top = {f.name for f in fields(Target)}
    unknown = sorted(set(data) - top)
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(top))}")
    for key in ("backend", "precision"):
        if key not in data:
            raise TargetError(f"{where}: missing '{key}'")
    if data["backend"] not in REGISTRY:
        raise TargetError(f"{where}.backend: {data['backend']!r} is not one of {', '.join(REGISTRY)}")
    if data["precision"] not in REGISTRY[data["backend"]].precisions:
        raise TargetError(f"{where}.precision: {data['precision']!r} is not one of "
                          f"{', '.join(REGISTRY[data['backend']].precisions)} for {data['backend']}")
    agree, drop = DEFAULT_TOLERANCE[data["precision"]]
    int8 = _typed(Int8Options, data.pop("int8", {}), f"{where} [int8]")
    if data["backend"] == "tensorrt" and int8.format != "qdq":
        if "int8" in data or data["precision"] == "int8":
            raise TargetError(f"{where} [int8].format: TensorRT takes Q/DQ INT8 only; set format = \"qdq\"")
    data["int8"] = int8
    data["openvino"] = _typed(OpenVINOOptions, data.pop("openvino", {}), f"{where} [openvino]")
    data["tensorrt"] = _typed(TensorRTOptions, data.pop("tensorrt", {}), f"{where} [tensorrt]")
    data["tolerance"] = _typed(Tolerance, {"min_agreement": agree, "max_accuracy_drop": drop,
                                           **data.pop("tolerance", {})}, f"{where} [tolerance]")
    if data.get("gray_stem", False) not in (True, False, "auto"):
        raise TargetError(f"{where}.gray_stem: expected true, false or \"auto\", got {data['gray_stem']!r}")
    for key, typ in (("heatmaps", bool), ("pool_first", bool), ("stem_s2d", bool),
                     ("dynamic_batch", bool), ("min_batch", int), ("opt_batch", int), ("max_batch", int),
                     ("opset", int), ("name", str), ("description", str)):
        if key in data and (not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool))):
            raise TargetError(f"{where}.{key}: expected {typ.__name__}, got {data[key]!r}")
    tgt = Target(**data)
    if tgt.stem_s2d and not tgt.gray_stem:
        raise TargetError(f"{where}: stem_s2d rewrites the gray stem; set gray_stem = true as well")
    if not 1 <= tgt.min_batch <= tgt.opt_batch <= tgt.max_batch:
        raise TargetError(f"{where}: need 1 <= min_batch <= opt_batch <= max_batch, got "
                          f"{tgt.min_batch}, {tgt.opt_batch}, {tgt.max_batch}")
    return tgt


def load_target(name_or_path: str, precision: str | None = None, batch: int | None = None,
                dynamic: bool | None = None, heatmaps: bool | None = None, reduce_range: bool | None = None) -> Target:
    """Resolve a target by name (``export/NAME.toml``), by backend name, or by path; apply overrides.

    ``reduce_range=True`` quantizes weights to 7 bits, so u8 x s8 products cannot saturate on CPUs without VNNI
    (AVX2-only): the artifact also runs right there. Where that differs from the file, the name gets ``-7bit`` or
    ``-8bit`` (an export folder of its own).

    A bare backend name (``onnx``, ``openvino``, ``tensorrt``) picks ``BACKEND-PRECISION`` (fp32 for
    onnx/openvino, fp16 for tensorrt unless ``precision`` says otherwise).
    """
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        path = p
    else:
        available = list_targets()
        name = name_or_path
        if name in REGISTRY:
            name = f"{name}-{precision or ('fp16' if name == 'tensorrt' else 'fp32')}"
            precision = None
        if name not in available:
            raise TargetError(f"unknown target {name_or_path!r}; available: {', '.join(available)} "
                              "(or pass a .toml file).")
        path = available[name]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: invalid TOML ({exc}).") from exc
    data.setdefault("name", path.stem)
    if precision:
        if precision != data.get("precision"):
            data["name"] = f"{data['backend']}-{precision}"
            data.pop("tolerance", None)  # the file's tolerance belongs to its own precision
        data["precision"] = precision
    if batch:
        data.update(dynamic_batch=False, min_batch=batch, opt_batch=batch, max_batch=batch)
    if dynamic is True:
        data["dynamic_batch"] = True
    if heatmaps is not None:
        data["heatmaps"] = heatmaps
    if reduce_range is not None:
        if data.get("precision") != "int8":
            raise TargetError(f"{data['name']}: --reduce-range applies to int8 targets only.")
        int8 = data.setdefault("int8", {})
        if int8.get("reduce_range", False) != reduce_range:  # not the file's artifact: a folder of its own
            data["name"] += "-7bit" if reduce_range else "-8bit"
        int8["reduce_range"] = reduce_range
    return target_from_dict(data, str(path))


# The stem's float-layer names in the 3-channel graph and what they become once the gray stem is folded in
# (edgecxr/export/gray_stem.py: channel 0 sliced, a 1-channel conv, the border-constant map added).
GRAY_STEM_NODES = {"/conv0/Conv": ["/conv0/Slice", "/conv0/conv/Conv", "/conv0/Add"]}


def resolve_target(tgt: Target, isa: dict | None = None) -> Target:
    """The target as this machine builds it (the cache key and the sidecar see the result).

    ``gray_stem = "auto"`` folds the gray stem in for the CPU engines (onnx, openvino) on x86 CPUs with VNNI or AMX
    only: on the AVX-512 VNNI EPYC openvino-int8 ran 0.7-0.9 ms faster with it and passed its gate, while its 7-bit
    build failed the gate on an AVX2-only CPU where the 3-channel stem passes (``benchmarks/HISTORY.md``, run24).
    ``isa``: :func:`edgecxr.hardware.isa_class` of the engine (default: this machine's). With the gray stem on, the
    3-channel stem's names in ``[int8] exclude`` become the gray stem's (:data:`GRAY_STEM_NODES`)."""
    gray = tgt.gray_stem
    if gray == "auto":
        if tgt.backend in ("onnx", "openvino"):
            from edgecxr.hardware import isa_class, x86_int8_dot

            gray = x86_int8_dot(isa or isa_class(backend=tgt.backend)) is True
        else:
            gray = False
        if tgt.stem_s2d and not gray:
            raise TargetError(f"{tgt.name}: stem_s2d needs the gray stem, which gray_stem = \"auto\" leaves off on "
                              "this CPU; set gray_stem = true or stem_s2d = false")
    exclude = list(tgt.int8.exclude)
    if gray:
        exclude = [m for n in exclude for m in GRAY_STEM_NODES.get(n, [n])]
    return replace(tgt, gray_stem=bool(gray), int8=replace(tgt.int8, exclude=exclude))
