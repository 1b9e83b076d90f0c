"""The few CUDA runtime calls the TensorRT runner needs, through ctypes: no torch, no
cuda-python, so a Jetson (JetPack ships libcudart with TensorRT) checks an engine with numpy,
tensorrt and this project alone.

Device pointers and streams belong to the device's primary context, which every CUDA
runtime in the process shares: memory from this libcudart is valid in TensorRT's calls even
when TensorRT links another CUDA runtime version.

Where to find libcudart: ``CUDA_HOME``/``CUDA_PATH``, the loader's own search (``ldconfig``),
NVIDIA's pip wheels (``nvidia-cuda-runtime-cu12``, ``nvidia-cuda-runtime`` for CUDA 13), then
``/usr/local/cuda*`` (JetPack: ``/usr/local/cuda/lib64``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from collections.abc import Iterator
from functools import cache

import numpy as np

# cudaMemcpyKind
_HOST_TO_DEVICE = 1
_DEVICE_TO_HOST = 2
# cudaDeviceAttr
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76
# cudaDeviceProp begins with ``char name[256]`` in every CUDA version; the whole struct is
# ~1 KB (CUDA 12) and has grown before, so the buffer is generous.
_PROP_BYTES = 16384
_NAME_BYTES = 256


# Every entry point used; a library lacking one is passed over for the next candidate.
SYMBOLS = (
    "cudaGetErrorName",
    "cudaGetErrorString",
    "cudaRuntimeGetVersion",
    "cudaGetDeviceCount",
    "cudaSetDevice",
    "cudaGetDeviceProperties",
    "cudaDeviceGetAttribute",
    "cudaMalloc",
    "cudaFree",
    "cudaStreamCreate",
    "cudaStreamDestroy",
    "cudaStreamSynchronize",
    "cudaMemcpyAsync",
)


class CudaUnavailable(RuntimeError):
    """No CUDA runtime library, or no usable GPU: the message says which and what to do."""


class CudaError(RuntimeError):
    """A CUDA call failed on a working GPU."""


_TOOLKIT_LIBS = ("lib64", "lib", "targets/*/lib")
# CUDA 12 wheels keep each library in its own folder; CUDA 13 ones share nvidia/cu13.
_WHEEL_LIBS = ("nvidia/cuda_runtime/lib", "nvidia/cu13/lib")


def _libcudart_in(root: str, folders: tuple[str, ...]) -> Iterator[str]:
    """Every libcudart.so* in ``root``/folder (globs allowed), newest version first."""
    for folder in folders:
        yield from sorted(glob.glob(f"{root}/{folder}/libcudart.so*"), reverse=True)


def _candidates() -> Iterator[str]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if root := os.environ.get(var):
            yield from _libcudart_in(root, _TOOLKIT_LIBS)
    if found := ctypes.util.find_library("cudart"):
        yield found
    for site in sys.path:
        yield from _libcudart_in(site, _WHEEL_LIBS)
    yield from _libcudart_in("/usr/local/cuda*", _TOOLKIT_LIBS)


@cache
def cudart() -> CudaRuntime:
    """The first CUDA runtime library that loads; CudaUnavailable naming how to get one."""
    tried = []
    for path in _candidates():
        if path.endswith(".a") or path in tried:
            continue
        tried.append(path)
        try:
            return CudaRuntime(ctypes.CDLL(path), path)
        except (OSError, AttributeError):  # not loadable, or an entry point missing
            continue
    raise CudaUnavailable(
        "the CUDA runtime library (libcudart) was not found: on a Jetson it comes with JetPack "
        "(/usr/local/cuda/lib64); elsewhere install the CUDA toolkit or pip install "
        "nvidia-cuda-runtime-cu12, or set CUDA_HOME"
    )


class CudaRuntime:
    """libcudart's calls as Python methods; every failure raises with CUDA's own words."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib, self.path = lib, path
        for symbol in SYMBOLS:
            getattr(lib, symbol)  # AttributeError names the one missing
        lib.cudaGetErrorName.restype = ctypes.c_char_p
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorName.argtypes = lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaMemcpyAsync.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaStreamSynchronize.argtypes = lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]

    def error_text(self, status: int) -> str:
        name = self.lib.cudaGetErrorName(status) or b"cudaError"
        text = self.lib.cudaGetErrorString(status) or b""
        return f"{name.decode()} ({text.decode()})"

    def _call(self, what: str, status: int) -> None:
        if status != 0:
            raise CudaError(f"{what} failed: {self.error_text(status)}")

    def runtime_version(self) -> int:
        """The library's CUDA version as 1000 x major + 10 x minor (12040 is 12.4)."""
        version = ctypes.c_int()
        self._call("cudaRuntimeGetVersion", self.lib.cudaRuntimeGetVersion(ctypes.byref(version)))
        return version.value

    def device_count(self) -> int:
        """How many GPUs CUDA sees; CudaUnavailable (with CUDA's reason) when it sees none."""
        count = ctypes.c_int()
        status = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if status != 0 or count.value == 0:
            why = self.error_text(status) if status else "no devices"
            raise CudaUnavailable(f"CUDA sees no GPU here: {why}")
        return count.value

    def set_device(self, device: int) -> None:
        self._call(f"cudaSetDevice({device})", self.lib.cudaSetDevice(device))

    def device_name(self, device: int) -> str:
        props = ctypes.create_string_buffer(_PROP_BYTES)
        self._call("cudaGetDeviceProperties", self.lib.cudaGetDeviceProperties(props, device))
        return props.raw[:_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace")

    def compute_capability(self, device: int) -> tuple[int, int]:
        values = []
        for attribute in (_COMPUTE_CAPABILITY_MAJOR, _COMPUTE_CAPABILITY_MINOR):
            value = ctypes.c_int()
            status = self.lib.cudaDeviceGetAttribute(ctypes.byref(value), attribute, device)
            self._call("cudaDeviceGetAttribute", status)
            values.append(value.value)
        return values[0], values[1]

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self._call(f"cudaMalloc({nbytes})", self.lib.cudaMalloc(ctypes.byref(pointer), nbytes))
        return int(pointer.value or 0)

    def free(self, pointer: int) -> None:
        self._call("cudaFree", self.lib.cudaFree(pointer))

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._call("cudaStreamCreate", self.lib.cudaStreamCreate(ctypes.byref(stream)))
        return int(stream.value or 0)

    def stream_destroy(self, stream: int) -> None:
        self._call("cudaStreamDestroy", self.lib.cudaStreamDestroy(stream))

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", self.lib.cudaStreamSynchronize(stream))

    def to_device(self, pointer: int, host: np.ndarray, stream: int) -> None:
        """Copy a C-contiguous host array to ``pointer``, queued on ``stream``; ``host`` must
        stay alive until the stream is synchronized."""
        assert host.flags.c_contiguous
        status = self.lib.cudaMemcpyAsync(
            pointer, host.ctypes.data, host.nbytes, _HOST_TO_DEVICE, stream
        )
        self._call("cudaMemcpyAsync (to the GPU)", status)

    def to_host(self, host: np.ndarray, pointer: int, stream: int) -> None:
        """Copy ``host.nbytes`` from ``pointer`` into the C-contiguous ``host``, on ``stream``."""
        assert host.flags.c_contiguous and host.flags.writeable
        status = self.lib.cudaMemcpyAsync(
            host.ctypes.data, pointer, host.nbytes, _DEVICE_TO_HOST, stream
        )
        self._call("cudaMemcpyAsync (from the GPU)", status)


class DeviceBuffers:
    """Device memory per tensor name, grown when a larger batch needs more, freed at close."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self._cuda = cuda
        self._held: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    def get(self, name: str, nbytes: int) -> int:
        pointer, size = self._held.pop(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._cuda.free(pointer)
            size = max(nbytes, 1)  # cudaMalloc(0) gives no pointer to hand TensorRT
            pointer = self._cuda.malloc(size)
        self._held[name] = (pointer, size)
        return pointer

    def close(self) -> None:
        held, self._held = self._held, {}
        for pointer, _ in held.values():
            self._cuda.free(pointer)
