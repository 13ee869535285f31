"""Artifacts and their sidecars: sha256, atomic writes, the sidecar schema, read and verify. Torch-free.

A sidecar is ``<artifact>.edgecxr.json`` beside the artifact file. The runtime refuses an artifact
whose bytes, classes or preprocessing do not match its sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgecxr.errors import ArtifactError

SIDECAR_FORMAT = 1
SIDECAR_SUFFIX = ".edgecxr.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sidecar_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: Path) -> dict:
    side = sidecar_path(artifact)
    if not side.is_file():
        raise ArtifactError(
            f"{artifact}: no sidecar {side.name} beside it. Export the model with `edgecxr export`, "
            "which writes both; an artifact without its sidecar is not trusted."
        )
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{side}: sidecar is not valid JSON ({exc}).") from exc
    for key in ("format", "classes", "preprocess", "artifact", "engine"):
        if key not in meta:
            raise ArtifactError(f"{side}: sidecar lacks '{key}'; re-export the model.")
    if meta["format"] != SIDECAR_FORMAT:
        raise ArtifactError(f"{side}: sidecar format {meta['format']} is not {SIDECAR_FORMAT}; upgrade edgecxr or re-export.")
    return meta


def verify_artifact_bytes(artifact: Path, meta: dict) -> None:
    """Check that the artifact file (and any weight files it names) has the sidecar's size and sha256."""
    artifact = Path(artifact)
    files = [(artifact, meta["artifact"])] + [
        (artifact.with_name(extra["file"]), extra) for extra in meta["artifact"].get("extra_files", [])
    ]
    for path, rec in files:
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (named by the sidecar).")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise ArtifactError(f"{path}: {size} bytes, sidecar says {rec['bytes']}; the file was changed or truncated.")
        digest = sha256_file(path)
        if digest != rec["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {digest[:12]}... does not match the sidecar's {rec['sha256'][:12]}...; "
                "the artifact was modified. Re-export it; do not use it for patients."
            )


def file_record(path: Path) -> dict:
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
