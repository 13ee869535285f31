"""Decode files in a worker process, so that a native decoder crash (SIGABRT, SIGSEGV in a DICOM
codec) costs one input, not the caller's process. Torch-free.

One long-lived worker (``multiprocessing`` spawn context, so no engine state is forked into it);
when it dies, the input it was decoding becomes an :class:`ImageError` and the next input starts
a fresh worker. Only DICOM files go through it (Pillow decodes in-process; its codecs raise).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from edgecxr.errors import ImageError
from edgecxr.imaging import is_dicom, load_gray

TIMEOUT_S = 60.0
WORKER_MEMORY_BYTES = 4 << 30  # address-space limit of the decoding worker: a bomb becomes a MemoryError


def _address_space_in_use() -> int:
    """Bytes of address space this process already maps (0 where /proc is absent)."""
    try:
        import os

        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def limit_memory(nbytes: int = WORKER_MEMORY_BYTES) -> None:
    """Let this process map at most ``nbytes`` more address space (Linux/macOS); a no-op where resource
    limits do not exist. The cap counts from what is already mapped: a worker forked from a large process
    (torch and engines loaded) capped below its inherited size could not even grow its stack, and would
    crash in ordinary Python code instead of raising MemoryError on a bomb."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = _address_space_in_use() + nbytes
        cap = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass


def _decode(path: str) -> tuple[np.ndarray, dict]:
    info: dict = {}
    return load_gray(path, info), info


class IsolatedDecoder:
    """``decode``: a module-level function path -> (image, info) run in the worker (tests pass a crashing one)."""

    def __init__(self, timeout: float = TIMEOUT_S, decode=_decode) -> None:
        self.timeout, self.decode = timeout, decode
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), initializer=limit_memory)
        return self._pool

    def load_gray(self, path, notes: dict | None = None) -> np.ndarray:
        p = Path(path)
        if not (p.is_file() and is_dicom(p)):
            return load_gray(path, notes)
        try:
            g, info = self._executor().submit(self.decode, str(p)).result(timeout=self.timeout)
        except ImageError:
            raise
        except BrokenProcessPool:
            self._reset()
            raise ImageError(f"{p}: the decoder crashed on this file (isolated; other inputs are unaffected).") from None
        except TimeoutError:
            self._reset(kill=True)
            raise ImageError(f"{p}: decoding took longer than {self.timeout:.0f} s; refused.") from None
        except Exception as exc:
            raise ImageError(f"{p}: cannot read ({type(exc).__name__}: {exc}).") from exc
        if notes is not None:
            notes.update(info)
        return g

    def _reset(self, kill: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            if kill:
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._reset()
