"""Decode files in a worker process, so that a native decoder crash (SIGABRT, SIGSEGV in a DICOM
codec) costs one input, not the caller's process. Torch-free.

One long-lived worker (``multiprocessing`` spawn context, so no engine state is forked into it);
when it dies, the input it was decoding becomes an :class:`ImageError` and the next input starts
a fresh worker. By default only DICOM files go through it (Pillow decodes PNG/JPEG/TIFF/BMP in-process; its codecs
raise on bad data); ``formats="all"`` sends every file, at the cost of copying each decoded image back
(``benchmarks/isolation_cost.py``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import weakref
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


SHARED_MIN_BYTES = 1 << 20  # decoded images at least this large come back through shared memory, not the pipe
_BLOCK = None  # the worker's shared-memory block, reused while large enough (fresh pages cost more than the copy)


def _decode_shared(decode, path: str):
    """Run ``decode`` in the worker; a large image is handed back in the worker's shared-memory block (a 3000 x 2500
    16-bit PNG: +28 ms over in-process decoding this way, +134 ms through the pipe; ``benchmarks/isolation_cost.py``)."""
    global _BLOCK
    g, info = decode(path)
    if not isinstance(g, np.ndarray) or g.nbytes < SHARED_MIN_BYTES:
        return g, info
    from multiprocessing import shared_memory

    g = np.ascontiguousarray(g)
    if _BLOCK is None or _BLOCK.size < g.nbytes:
        if _BLOCK is not None:
            _BLOCK.close()
            _BLOCK.unlink()
            _BLOCK = None
        size = -(-g.nbytes // (1 << 20)) << 20
        if not _shm_has_room(size):  # a full /dev/shm would kill the worker with SIGBUS on the first write
            return g, info
        _BLOCK = shared_memory.SharedMemory(create=True, size=size)
    np.ndarray(g.shape, g.dtype, buffer=_BLOCK.buf)[...] = g
    return _Shared(_BLOCK.name, g.shape, g.dtype.str), info


def _shm_has_room(nbytes: int, folder: str = "/dev/shm") -> bool:
    """Whether the shared-memory filesystem can hold ``nbytes`` more (containers often give it 64 MB)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return not sys.platform.startswith("linux")  # macOS/BSD shared memory is not a size-limited folder
    return st.f_bavail * st.f_frsize >= nbytes + (8 << 20)


class _Shared:
    """A decoded image waiting in the worker's shared-memory block (name, shape, dtype)."""

    def __init__(self, name: str, shape: tuple, dtype: str) -> None:
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


def _drop_block(state: dict, unlink: bool) -> None:
    block, state["block"] = state["block"], None
    if block is not None:
        block.close()
        if unlink:
            try:
                block.unlink()
            except FileNotFoundError:
                pass


def _shutdown(state: dict, kill: bool = False) -> None:
    """Free the shared-memory block (its worker is gone or going: nobody else will) and stop the worker."""
    _drop_block(state, unlink=True)
    pool, state["pool"] = state["pool"], None
    if pool is not None:
        if kill:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


class IsolatedDecoder:
    """``decode``: a module-level function path -> (image, info) run in the worker (tests pass a crashing one);
    ``formats``: "dicom" (DICOM files only) or "all" (every file)."""

    def __init__(self, timeout: float = TIMEOUT_S, decode=_decode, formats: str = "dicom") -> None:
        if formats not in ("dicom", "all"):
            raise ValueError(f"formats must be 'dicom' or 'all', not {formats!r}")
        self.timeout, self.decode, self.formats = timeout, decode, formats
        self._state: dict = {"pool": None, "block": None}  # the worker pool; our mapping of its shared-memory block
        self._lock = threading.Lock()  # one decode at a time: the next one reuses the block
        weakref.finalize(self, _shutdown, self._state)  # also at exit when nobody called close()

    def _executor(self) -> ProcessPoolExecutor:
        if self._state["pool"] is None:
            self._state["pool"] = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                                      initializer=limit_memory)
        return self._state["pool"]

    def load_gray(self, path, notes: dict | None = None) -> np.ndarray:
        p = Path(path)
        if not p.is_file() or (self.formats == "dicom" and not is_dicom(p)):
            return load_gray(path, notes)  # a missing file gets its own error; non-DICOM decodes here unless "all"
        with self._lock:  # a crash or timeout resets the worker before another thread may submit to it
            try:
                g, info = self._executor().submit(_decode_shared, self.decode, str(p)).result(timeout=self.timeout)
                if isinstance(g, _Shared):
                    g = self._take(g)
            except ImageError:
                raise
            except BrokenProcessPool:
                self._reset()
                raise ImageError(f"{p}: the decoder crashed on this file (isolated; other inputs are unaffected).") \
                    from None
            except TimeoutError:
                self._reset(kill=True)
                raise ImageError(f"{p}: decoding took longer than {self.timeout:.0f} s; refused.") from None
            except Exception as exc:
                raise ImageError(f"{p}: cannot read ({type(exc).__name__}: {exc}).") from exc
        if notes is not None:
            notes.update(info)
        return g

    def _take(self, ref: _Shared) -> np.ndarray:
        """Copy the image out of the worker's block (mapped once, again only when the worker replaced it)."""
        from multiprocessing import shared_memory

        block = self._state["block"]
        if block is None or block.name != ref.name:
            _drop_block(self._state, unlink=False)  # the worker unlinked the block it outgrew
            block = self._state["block"] = shared_memory.SharedMemory(name=ref.name)
        return np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=block.buf).copy()

    def _reset(self, kill: bool = False) -> None:
        _shutdown(self._state, kill)

    def close(self) -> None:
        self._reset()
