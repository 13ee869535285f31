"""Where the shipped files are: export targets, calibration/eval images, the default model. Torch-free.

In a source checkout they are the top-level folders; in a wheel they are copied to
``edgecxr/_shipped`` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_REPO = _PKG.parent


def _find(name: str) -> Path:
    for cand in (_REPO / name, _PKG / "_shipped" / name):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"shipped folder '{name}' not found beside the package; reinstall edgecxr.")


def targets_dir() -> Path:
    return _find("export")


def calibration_dir() -> Path:
    return _find("calibration_data") / "calib"


def eval_dir() -> Path:
    """Permissive dev **test** images: the bench's and demo's labelled set."""
    return _find("calibration_data") / "eval"


def val_dir() -> Path:
    return _find("calibration_data") / "val"


def verification_dirs() -> list[Path]:
    """The export gate's default images: permissive dev val + test, disjoint from calib/ (dev train)."""
    return [val_dir(), eval_dir()]


def default_checkpoint() -> Path:
    return _PKG / "weights" / "covid-densenet-cxr3.safetensors"
