"""What machine is this: CPU model and ISA features, NVIDIA GPUs, Jetson model and power mode. Torch-free."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from edgecxr.backends import dist_version

ISA_FLAGS = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
    "asimd": "NEON", "asimddp": "NEON dot-product", "sve": "SVE", "bf16": "BF16",
}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model, logical cores and the ISA features that matter for inference (from /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and val.strip():
            model = val.strip()
        elif key in ("flags", "features"):
            flags.update(val.split())
    return {
        "model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(),
        "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags],
    }


_AVX512 = {"AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX", "AMX-BF16", "AMX-INT8"}
_CPUID = {"AVX-512F": "AVX512F", "AVX-512 VNNI": "AVX512VNNI", "AVX-512 BF16": "AVX512BF16", "AVX2": "AVX2"}


# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA): what each value still lets its kernels use
_ONEDNN_CAP = {
    "SSE41": set(), "AVX": set(), "AVX2": {"AVX2"}, "AVX2_VNNI": {"AVX2", "AVX-VNNI"},
    "AVX2_VNNI_2": {"AVX2", "AVX-VNNI"}, "AVX512_CORE": {"AVX2", "AVX-512F"},
    "AVX512_CORE_VNNI": {"AVX2", "AVX-512F", "AVX-512 VNNI"},
    "AVX512_CORE_BF16": {"AVX2", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16"},
    "AVX512_CORE_FP16": {"AVX2", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16"},
    "AVX10_1_512": {"AVX2", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16"},
}
ONEDNN_BACKENDS = ("openvino", "torch")  # engines whose CPU kernels oneDNN picks (ONNX Runtime's MLAS reads CPUID)


def onednn_cap(env=None) -> set[str] | None:
    """The features oneDNN may use under ``ONEDNN_MAX_CPU_ISA`` (None: no cap, or one that caps nothing we track)."""
    env = os.environ if env is None else env
    value = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return _ONEDNN_CAP.get(value)


# ATen's own switch (ATEN_CPU_CAPABILITY) for the same cap: torch's non-oneDNN CPU kernels follow it
_ATEN_CAPABILITY = {"AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2"}


def onednn_cap_env(value: str) -> dict[str, str]:
    """The environment that makes OpenVINO and torch run a lower ISA's kernels on this CPU (``edgecxr bench
    --onednn-isa``): ``ONEDNN_MAX_CPU_ISA`` for oneDNN, ``ATEN_CPU_CAPABILITY`` for torch's other kernels."""
    key = value.strip().upper()
    if key not in _ONEDNN_CAP:
        raise ValueError(f"unknown oneDNN ISA {value!r}; use one of: {', '.join(_ONEDNN_CAP)}")
    env = {"ONEDNN_MAX_CPU_ISA": key}
    env["ATEN_CPU_CAPABILITY"] = _ATEN_CAPABILITY.get(key, "avx512" if key.startswith(("AVX512", "AVX10")) else "default")
    return env


def isa_class(cpu: dict | None = None, cpuid: dict | None = None, backend: str | None = None, env=None) -> dict:
    """What INT8 and bf16 CPU kernels are chosen by: the architecture and its integer / bf16 extensions (VNNI or
    not changes ORT's reduce_range and both engines' kernels; bf16 changes OpenVINO's default precision).

    /proc/cpuinfo lists what the kernel saw; the engines ask CPUID, which a hypervisor or emulator may answer
    with less. Where numpy's CPUID probe (``cpuid``; default: numpy's own) says a feature is absent, it is dropped.
    For an engine built on oneDNN (``backend`` openvino or torch), ``ONEDNN_MAX_CPU_ISA`` in ``env`` (default: this
    process's environment) caps the class too: with ``AVX2`` OpenVINO runs the kernels of an AVX2-only CPU, so its
    INT8 verdicts belong to that class (``benchmarks/results/emulated-avx2/``: the same outputs as under QEMU)."""
    cpu = cpu or cpu_info()
    isa = set(cpu["isa"])
    if cpuid is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as cpuid
        except ImportError:  # numpy < 2
            try:
                from numpy.core._multiarray_umath import __cpu_features__ as cpuid
            except ImportError:
                cpuid = {}
    if cpuid.get("AVX") and cpu["arch"] in ("x86_64", "AMD64"):
        if not cpuid.get("AVX512F"):
            isa -= _AVX512
        for name, key in _CPUID.items():
            if key in cpuid and not cpuid[key]:
                isa.discard(name)
        if not cpuid.get("AVX2"):
            isa.discard("AVX-VNNI")
    cap = onednn_cap(env) if backend in ONEDNN_BACKENDS and cpu["arch"] in ("x86_64", "AMD64") else None
    if cap is not None:
        isa = {f for f in isa if f in cap or not (f in _AVX512 or f in ("AVX2", "AVX-VNNI"))}
    return {"arch": cpu["arch"], "isa": sorted(f for f in isa if "VNNI" in f or "AMX" in f or "BF16" in f
                                               or f in ("AVX2", "AVX-512F", "NEON dot-product"))}


def x86_int8_dot(cpu: dict) -> bool | None:
    """For an :func:`isa_class` result: True on x86 with an int8 dot-product instruction (VNNI or AMX), False on x86
    without one (AVX2-only: u8 x s8 products can saturate), None on other architectures."""
    if cpu["arch"] not in ("x86_64", "AMD64"):
        return None
    return any("VNNI" in f or "AMX" in f for f in cpu["isa"])


def gpu_info() -> list[dict]:
    """NVIDIA GPUs through nvidia-smi (no CUDA library needed)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append({"name": parts[0], "memory_mib": int(float(parts[1])) if parts[1].replace(".", "").isdigit() else None,
                         "compute_capability": parts[2], "driver": parts[3]})
    return gpus


def jetson_info(root: Path = Path("/")) -> dict | None:
    """Jetson model, L4T release and nvpmodel power mode, or None when not a Jetson."""
    rel = root / "etc/nv_tegra_release"
    model_file = root / "proc/device-tree/model"
    if not rel.is_file() and not model_file.is_file():
        return None
    info: dict = {}
    if model_file.is_file():
        info["model"] = model_file.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    if rel.is_file():
        info["l4t"] = rel.read_text().splitlines()[0].strip()
    if "model" in info and "jetson" not in info["model"].lower() and not rel.is_file():
        return None
    nvp = shutil.which("nvpmodel")
    if nvp:
        try:
            out = subprocess.run([nvp, "-q"], capture_output=True, text=True, timeout=10).stdout
            info["power_mode"] = parse_nvpmodel(out)
        except (subprocess.SubprocessError, OSError):
            pass
    return info


def is_jetson(root: Path = Path("/")) -> bool:
    """True on an NVIDIA Jetson (the one place this is decided)."""
    return jetson_info(root) is not None


def parse_nvpmodel(text: str) -> str | None:
    """``nvpmodel -q`` prints e.g. 'NV Power Mode: MAXN' then the mode number."""
    for line in text.splitlines():
        if "power mode" in line.lower() and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def backend_versions() -> dict[str, str | None]:
    """Installed versions (from package metadata: nothing heavy is imported)."""
    from edgecxr import __version__

    names = {"torch": "torch", "torchvision": "torchvision", "onnx": "onnx", "onnxruntime": "onnxruntime",
             "onnxruntime-gpu": "onnxruntime-gpu", "openvino": "openvino", "nncf": "nncf", "tensorrt": "tensorrt",
             "cuda-python": "cuda-python", "pycuda": "pycuda", "pydicom": "pydicom", "numpy": "numpy"}
    out = {"edgecxr": __version__, "python": platform.python_version()}
    out.update({k: dist_version(v) for k, v in names.items()})
    return out


def backends_report() -> dict[str, dict]:
    """Each registered backend: installed version, whether it can run here, and why not."""
    from edgecxr.backends import REGISTRY

    out = {}
    for name, b in REGISTRY.items():
        ok, why = b.available()
        out[name] = {"version": b.version(), "available": ok, "reason": why, "description": b.description}
    return out


def machine_report() -> dict:
    rep = {"versions": backend_versions(), "cpu": cpu_info(), "gpus": gpu_info(), "jetson": jetson_info(),
           "backends": backends_report(), "os": platform.platform()}
    if onednn_cap() is not None:  # OpenVINO and torch run a lower ISA's kernels in this process and its children
        rep["onednn_cap"] = {"ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
                             "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                             "openvino_and_torch_isa": isa_class(backend="openvino")["isa"]}
    return rep
