"""Artifact files: sha256, atomic writes, and the check of an artifact's bytes against its sidecar
(:mod:`edgecxr.sidecar`). Torch-free."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgecxr.errors import ArtifactError



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


def verify_artifact_bytes(artifact: Path, sidecar) -> None:
    """Check that the artifact file (and any weight files it names) has the sidecar's size and sha256."""
    artifact = Path(artifact)
    if artifact.name != sidecar.artifact.file:
        raise ArtifactError(f"{artifact}: the sidecar describes {sidecar.artifact.file!r}, not this file; re-export it.")
    for rec in [sidecar.artifact, *sidecar.extra_files]:
        path = artifact.with_name(rec.file)
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (named by the sidecar).")
        size = path.stat().st_size
        if size != rec.bytes:
            raise ArtifactError(f"{path}: {size} bytes, sidecar says {rec.bytes}; the file was changed or truncated.")
        digest = sha256_file(path)
        if digest != rec.sha256:
            raise ArtifactError(
                f"{path}: sha256 {digest[:12]}... does not match the sidecar's {rec.sha256[:12]}...; "
                "the artifact was modified. Re-export it; do not use it for patients."
            )
