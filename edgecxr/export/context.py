"""What the format builders share: the loaded model, its metadata, calibration and verification images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgecxr.preprocess import PreprocessConfig


class ExportContext:
    """Built once per export; the builders (one module per backend) read from it."""

    def __init__(self, checkpoint: Path, calib_dirs: list[Path], verify_dirs: list[Path],
                 progress: Callable[[int], None] | None = None, heatmaps: bool = False,
                 step: Callable[[str], None] | None = None) -> None:
        from edgecxr.checkpoint import load_model

        self.checkpoint = Path(checkpoint)
        self.model, self.meta = load_model(checkpoint)
        self.classes: list[str] = self.meta["classes"]
        self.pcfg = PreprocessConfig.from_dict(self.meta["preprocess"])
        self.calib_dirs, self.verify_dirs, self.progress, self._step = calib_dirs, verify_dirs, progress, step
        self._calib: np.ndarray | None = None
        self._verify: tuple | None = None
        self._module = self._reference = None
        self.gray_stem = False  # set from the target: the exported graph folds the gray replication into its stem
        self.pool_first = False  # set from the target: the transitions pool before their 1x1 convs
        self.stem_s2d = False  # set from the target: the gray stem as a conv of 2x2 pixel blocks
        self.heatmaps = heatmaps and hasattr(self.model, "forward_maps")

    def say(self, what: str) -> None:
        """Tell the caller what the export is doing now (the CLI shows it on its progress line)."""
        if self._step is not None:
            self._step(what)

    @property
    def size(self) -> int:
        return self.pcfg.size

    @property
    def guard(self) -> dict | None:
        """The input guard's statistics and threshold, when the checkpoint carries them."""
        return self.meta.get("guard")

    @property
    def operating_point(self) -> dict | None:
        return self.meta.get("operating_point")

    def reference_module(self):
        """The checkpoint's own model as exported (logits, guard score, maps): FP32 torch, the gate's reference."""
        if self._reference is None:
            from edgecxr.guard_torch import ExportModule

            self._reference = ExportModule(self.model, self.guard, maps=self.heatmaps).eval()
        return self._reference

    def export_module(self):
        """The torch module that is exported: the reference, rewritten as the target says (``gray_stem``: the stem
        folded; ``pool_first``: transitions pool before their convs). Same function; the gate checks it."""
        if not (self.gray_stem or self.pool_first):
            return self.reference_module()
        if self._module is None:
            from edgecxr.guard_torch import ExportModule

            model = self.model
            if self.gray_stem:
                from edgecxr.export.gray_stem import fold_gray_stem

                model = fold_gray_stem(model, self.pcfg.mean, self.pcfg.std, self.size, s2d=self.stem_s2d)
            if self.pool_first:
                from edgecxr.export.pool_first import pool_first

                model = pool_first(model)
            self._module = ExportModule(model, self.guard, maps=self.heatmaps, probe_size=self.size).eval()
        return self._module

    @property
    def outputs(self) -> list[str]:
        return self.export_module().output_names

    def heatmap_record(self) -> dict | None:
        """The classifier's weights and how the maps combine: numpy computes the CAM from the artifact's maps."""
        if not self.heatmaps:
            return None
        lin = self.model.classifier[-1]
        names = [o for o in self.outputs if o.startswith("maps")]
        return {"outputs": names, "weight": lin.weight.detach().double().numpy().round(7).tolist(),
                "bias": lin.bias.detach().double().numpy().round(7).tolist(),
                "combine": "sum over maps of nearest-upsampled (W[c, block] . maps_i) to the largest map; "
                           "block i = columns [i*C_i, (i+1)*C_i)"}

    def calib(self) -> np.ndarray:
        if self._calib is None:
            from edgecxr.export.calib import load_images

            self._calib = load_images(self.calib_dirs, self.pcfg, self.classes)[0]
        return self._calib

    def verify_set(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(x, labels, FP32 torch outputs by name) for the verification gate."""
        if self._verify is None:
            import torch

            from edgecxr.export.calib import load_images
            from edgecxr.runtime.batching import chunks

            x, y, samples = load_images(self.verify_dirs, self.pcfg, self.classes)
            self._verify_paths = [s.path for s in samples]
            module = self.reference_module()
            parts: dict[str, list[np.ndarray]] = {}
            with torch.no_grad():
                for i, j in chunks(len(x), 16):
                    out = module(torch.from_numpy(x[i:j]))
                    out = out if isinstance(out, tuple) else (out,)
                    for name, v in zip(self.outputs, out):
                        parts.setdefault(name, []).append(v.numpy())
            self._verify = (x, y, {k: np.concatenate(v) for k, v in parts.items()})
        return self._verify

    def verify_digests(self) -> list[str]:
        """sha256 of each verification image, in :meth:`verify_set` order."""
        from edgecxr.artifact import sha256_file

        self.verify_set()
        return [sha256_file(p) for p in self._verify_paths]

    def metadata(self) -> dict:
        """What is embedded in the artifact and cross-checked against the sidecar at load."""
        md = {"arch": self.meta["arch"], "classes": self.classes, "preprocess": self.pcfg.to_dict()}
        if self.guard:
            md["guard"] = self.guard_public()
        if self.operating_point:
            md["operating_point"] = self.operating_point
        if self.heatmaps:
            md["heatmap"] = self.heatmap_record()
        if self.gray_stem:
            md["gray_stem"] = True
        return md

    def guard_public(self) -> dict | None:
        """The guard record for sidecar and metadata: threshold and provenance (the statistics live in the graph)."""
        if not self.guard:
            return None
        from edgecxr.runtime.header_rules import HeaderRules
        from edgecxr.runtime.image_rules import ImageRules

        rec = {k: v for k, v in self.guard.items() if k not in ("mean", "components", "inv_lambda", "bank", "center", "weight")}
        # the pixel-free rules the runtime applies before the model, recorded so the sidecar says what runs
        return {"header_rules": HeaderRules().to_dict(), "image_rules": ImageRules().to_dict(), **rec}

    def fp32_onnx(self, target, tmp: Path) -> Path:
        """The FP32 ONNX every backend starts from (built once per export)."""
        from edgecxr.export.onnx_fp32 import export_onnx

        path = tmp / "fp32.onnx"
        if not path.exists():
            export_onnx(self.export_module(), path, size=self.size, opset=target.opset,
                        batch=None if target.dynamic_batch else target.max_batch, metadata=self.metadata(),
                        output_names=self.outputs)
        return path
