"""The TensorRT runner's CUDA calls (partialnet.runtimes.cuda), as far as a machine without a
GPU can take them: the library found and bound, CUDA's own words for its errors, the reason
an engine cannot run here, and no torch anywhere on that path. The copies and the engine run
are covered on a GPU by tests/runtimes/test_tensorrt_runner.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from partialnet.runtimes import cuda
from partialnet.runtimes.cuda import CudaUnavailable, DeviceBuffers, cudart


def _cudart_or_skip() -> cuda.CudaRuntime:
    try:
        return cudart()
    except CudaUnavailable as exc:
        pytest.skip(str(exc))


def test_the_library_is_bound_and_speaks_cudas_words() -> None:
    lib = _cudart_or_skip()
    assert all(hasattr(lib.lib, symbol) for symbol in cuda.SYMBOLS)
    # cudaRuntimeGetVersion needs no driver: 1000 x major + 10 x minor, CUDA 11 or newer.
    assert lib.runtime_version() >= 11000
    assert lib.error_text(0) == "cudaSuccess (no error)"
    assert lib.error_text(100).startswith("cudaErrorNoDevice (")


def test_no_gpu_is_said_in_cudas_words() -> None:
    lib = _cudart_or_skip()
    try:
        count = lib.device_count()
    except CudaUnavailable as exc:
        message = str(exc)
        assert message.startswith("CUDA sees no GPU here: cudaError") and "\n" not in message
    else:
        assert count >= 1  # a GPU machine: the runner's GPU tests run there


def test_a_missing_library_names_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "_candidates", lambda: iter(()))
    cudart.cache_clear()
    try:
        with pytest.raises(CudaUnavailable) as info:
            cudart()
    finally:
        cudart.cache_clear()
    message = str(info.value)
    assert "libcudart" in message and "JetPack" in message and "CUDA_HOME" in message


def test_the_tensorrt_runner_imports_no_torch(tmp_path) -> None:
    # A device without torch (a Jetson with JetPack): opening an engine gets as far as this
    # machine allows (no SDK, no GPU or a bad plan) without torch ever being imported.
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a plan")
    code = (
        "import sys\n"
        "from partialnet.runtimes.tensorrt import TensorRTRunner, tensorrt_unavailable_reason\n"
        "print(tensorrt_unavailable_reason())\n"
        "try:\n"
        f"    TensorRTRunner({str(engine)!r}).activate()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print('torch' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "False", run.stdout


class _CountingAllocator:
    """Stands in for libcudart's malloc/free to count them (bookkeeping only)."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.next = 0x1000

    def malloc(self, nbytes: int) -> int:
        self.next += 0x1000
        self.live[self.next] = nbytes
        return self.next

    def free(self, pointer: int) -> None:
        del self.live[pointer]


def test_device_buffers_grow_once_and_are_all_freed() -> None:
    allocator = _CountingAllocator()
    buffers = DeviceBuffers(allocator)  # type: ignore[arg-type]
    first = buffers.get("input", 1024)
    assert buffers.get("input", 512) == first  # a smaller batch reuses the buffer
    grown = buffers.get("input", 4096)  # a larger one replaces it
    assert grown != first and allocator.live == {grown: 4096}
    buffers.get("logits", 40)
    assert len(allocator.live) == 2
    buffers.close()
    assert allocator.live == {}
