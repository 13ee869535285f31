"""Device buffers and a stream for the TensorRT runner: cuda-python (NVIDIA's current samples) or pycuda.

Buffers are allocated once per role and grown when a larger batch arrives.
"""

from __future__ import annotations

import numpy as np

from edgecxr.errors import BackendUnavailable


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except ImportError:
        return None


class CudaMemory:
    def __init__(self) -> None:
        self._bufs: dict[str, tuple[int, int]] = {}
        self._rt = _cudart()
        if self._rt is not None:
            self.binding = "cuda-python"
            err, self._stream = self._rt.cudaStreamCreate()
            self._check(err)
            self.stream_handle = int(self._stream)
            return
        try:
            import pycuda.autoinit  # noqa: F401
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailable("TensorRT needs cuda-python or pycuda for device memory: pip install cuda-python") from exc
        self.binding = "pycuda"
        self._cuda = cuda
        self._stream = cuda.Stream()
        self.stream_handle = self._stream.handle
        self._pyc: dict[str, object] = {}

    def _check(self, err) -> None:
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")

    def alloc(self, nbytes: int, role: str) -> int:
        ptr, size = self._bufs.get(role, (0, 0))
        if size >= nbytes:
            return ptr
        if self._rt is not None:
            if ptr:
                self._check(self._rt.cudaFree(ptr)[0])
            err, ptr = self._rt.cudaMalloc(nbytes)
            self._check(err)
            ptr = int(ptr)
        else:
            buf = self._cuda.mem_alloc(nbytes)
            self._pyc[role] = buf
            ptr = int(buf)
        self._bufs[role] = (ptr, nbytes)
        return ptr

    def h2d(self, dst: int, src: np.ndarray) -> None:
        if self._rt is not None:
            self._check(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                                 self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream)[0])
        else:
            self._cuda.memcpy_htod_async(dst, src, self._stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        if self._rt is not None:
            self._check(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                                 self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream)[0])
        else:
            self._cuda.memcpy_dtoh_async(dst, src, self._stream)

    def sync(self) -> None:
        if self._rt is not None:
            self._check(self._rt.cudaStreamSynchronize(self._stream)[0])
        else:
            self._stream.synchronize()

    def free(self) -> None:
        """Release every device buffer and the stream (idempotent)."""
        if self._rt is not None:
            for ptr, _ in self._bufs.values():
                if ptr:
                    self._rt.cudaFree(ptr)
            if getattr(self, "_stream", None) is not None:
                self._rt.cudaStreamDestroy(self._stream)
        else:
            for buf in getattr(self, "_pyc", {}).values():
                buf.free()
            self._pyc = {}
        self._bufs = {}
        self._stream = None
