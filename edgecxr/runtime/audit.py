"""Audit log: one JSON line per input, appended atomically and flushed. Torch-free.

Each line: UTC time, input sha256 (of the file's bytes, or of the array's bytes: never pixel data,
names or other identifiers), artifact sha256, edgecxr version, status, finding, probabilities,
latency. A line is written with one ``os.write`` on a file opened with ``O_APPEND`` and then
fsynced, under a process-wide lock: threads never interleave, and a crash mid-write can at worst
leave a truncated last line (readers skip it), never damage earlier lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

_LOCK = threading.Lock()


def input_sha256(item: Any) -> str | None:
    try:
        if isinstance(item, (str, Path)):
            h = hashlib.sha256()
            with open(item, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            return h.hexdigest()
        if isinstance(item, np.ndarray):
            return hashlib.sha256(np.ascontiguousarray(item).tobytes()).hexdigest()
        if hasattr(item, "tobytes"):
            return hashlib.sha256(item.tobytes()).hexdigest()
    except (OSError, ValueError):
        return None
    return None


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from edgecxr import __version__

        self.version = __version__

    def record(self, item: Any, result, latency_ms: float) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "input_sha256": input_sha256(item), "artifact_sha256": result.model.get("sha256"),
            "edgecxr_version": self.version, "status": result.status, "finding": result.finding,
            "label": result.label, "probabilities": result.probabilities, "guard_score": result.guard_score,
            "reason": (result.reason or "").replace(result.source, "<input>")[:300] or None,
            "latency_ms": round(latency_ms, 3)}
        data = (json.dumps(line, sort_keys=True, allow_nan=False) + "\n").encode()
        with _LOCK:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":  # a line cut by a crash: start on a fresh line
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)


def read_audit(path: str | Path) -> list[dict]:
    """Every complete line of an audit log (a truncated last line from a crash is skipped)."""
    out = []
    for raw in Path(path).read_bytes().split(b"\n"):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return out
