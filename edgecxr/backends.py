"""The backend registry: one :class:`Backend` record per inference engine. Torch-free.

Export, runtime, bench and ``edgecxr info`` read this table and nothing else to learn what an
engine's artifact is called, which files travel with it, how it is built and run, and whether it
can run here. A new backend is one entry below plus a builder module (``build(ctx, target, tmp)``)
and a runner class (a :class:`edgecxr.runtime.base.BaseRunner`); see ``edgecxr/README.md``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from edgecxr.errors import ArtifactError


def dist_version(*dists: str) -> str | None:
    """Installed version of the first of ``dists`` that is installed, else None."""
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _import(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Backend:
    name: str
    artifact_name: str  # file name of the artifact in an export folder
    precisions: tuple[str, ...]  # precisions its builder makes
    builder: str  # "module:function" with signature build(ctx, target, tmp) -> (artifact, engine facts)
    runner: str  # "module:Class", a BaseRunner
    dists: tuple[str, ...]  # pip distributions, any of which provides the engine
    install_hint: str
    extra_suffixes: tuple[str, ...] = ()  # files beside the artifact that belong to it (OpenVINO's .bin)
    stamp: str | None = None  # "module:function(artifact, metadata)" embedding edgecxr metadata after verification
    needs_nvidia_gpu: bool = False
    description: str = ""

    def extra_files(self, artifact: Path) -> list[Path]:
        return [Path(artifact).with_suffix(s) for s in self.extra_suffixes]

    def version(self) -> str | None:
        return dist_version(*self.dists)

    def available(self) -> tuple[bool, str]:
        """Whether the engine can run on this machine, and if not, what to do about it."""
        if self.version() is None:
            try:  # JetPack installs TensorRT outside pip
                importlib.import_module(self.dists[0].split("-")[0].replace("-", "_"))
            except ImportError:
                return False, f"{self.name} is not installed: {self.install_hint}"
        if self.needs_nvidia_gpu:
            from edgecxr.hardware import gpu_info, is_jetson

            if not gpu_info() and not is_jetson():
                return False, "no NVIDIA GPU (nvidia-smi finds none and this is not a Jetson)"
        return True, ""

    def build_function(self):
        return _import(self.builder)

    def runner_class(self):
        return _import(self.runner)

    def stamp_function(self):
        return _import(self.stamp) if self.stamp else None


REGISTRY: dict[str, Backend] = {b.name: b for b in (
    Backend("onnx", "model.onnx", ("fp32", "fp16", "int8"), "edgecxr.export.onnx_build:build",
            "edgecxr.runtime.runners:OnnxRunner", ("onnxruntime", "onnxruntime-gpu"), "pip install onnxruntime",
            stamp="edgecxr.export.onnx_build:stamp_onnx", description="ONNX Runtime on any CPU (CUDA with onnxruntime-gpu)"),
    Backend("openvino", "model.xml", ("fp32", "fp16", "int8"), "edgecxr.export.openvino_ir:build",
            "edgecxr.runtime.runners:OpenVINORunner", ("openvino",), "pip install 'edgecxr[openvino]'",
            extra_suffixes=(".bin",), stamp="edgecxr.export.openvino_ir:stamp_openvino", description="OpenVINO on Intel/AMD CPUs, Intel GPUs and NPUs"),
    Backend("tensorrt", "model.engine", ("fp32", "fp16", "int8"), "edgecxr.export.tensorrt_engine:build",
            "edgecxr.runtime.runners:TensorRTRunner", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
            "pip install 'edgecxr[tensorrt]' (JetPack ships it on Jetson)", needs_nvidia_gpu=True,
            description="TensorRT engines for NVIDIA GPUs and Jetson (not verified on hardware yet)"),
)}


def get_backend(name: str) -> Backend:
    """The registry entry for ``name``; an :class:`ArtifactError` naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ArtifactError(f"unknown backend {name!r}; this edgecxr knows {', '.join(REGISTRY)}.") from None


def backend_available(name: str) -> tuple[bool, str]:
    return get_backend(name).available()
