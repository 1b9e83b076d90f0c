"""Run a serialized TensorRT (or TensorRT-RTX) engine on an NVIDIA GPU, torch-free: numpy
arrays in and out, device memory and a stream through libcudart (``partialnet.runtimes.cuda``).

What needs no GPU (the file check, the SDK flavour the engine was built with, the precision
words) runs before the GPU is touched and is tested everywhere; the GPU path is tested by
tests/runtimes/test_tensorrt_runner.py wherever a GPU and the SDK are present.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import MissingDependencyError, UsageError

from . import base
from .base import Runner, RunnerInfo, RuntimeUnavailableError
from .cuda import CudaRuntime, CudaUnavailable, DeviceBuffers, cudart
from .tensorrt_sdk import FLAVOUR_RTX, FLAVOUR_TENSORRT, import_tensorrt, make_logger

# TensorRT DataType names -> the host arrays that hold them (numpy has no bfloat16: an engine
# with bf16 I/O is refused; partialnet-export's engines take and give float32).
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
# TensorRT DataType names -> the project's precision words, widest-first preference below.
_PRECISION_WORDS = {"INT8": "int8", "FP8": "fp8", "HALF": "fp16", "BF16": "bf16"}
# partialnet.export.output.manifest.MANIFEST_NAME (runtimes cannot import it)
_MANIFEST = "manifest.json"


def tensorrt_unavailable_reason() -> str | None:
    """None when an engine can run here (SDK importable and a CUDA GPU visible), else why not."""
    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        return str(exc)
    return _gpu_reason()


def _gpus() -> tuple[CudaRuntime, int]:
    """libcudart and how many GPUs it sees; RuntimeUnavailableError saying why none can run
    an engine here."""
    try:
        cuda = cudart()
        return cuda, cuda.device_count()
    except CudaUnavailable as exc:
        raise RuntimeUnavailableError(
            f"TensorRT engines need an NVIDIA GPU and its driver; {exc}"
        ) from None


def _gpu_reason() -> str | None:
    try:
        _gpus()
    except RuntimeUnavailableError as exc:
        return str(exc)
    return None


def engine_record(engine_path: Path) -> dict[str, Any] | None:
    """The manifest.json record of ``engine_path`` when the engine sits in an export folder."""
    try:
        manifest = json.loads((engine_path.parent / _MANIFEST).read_text())
        records = manifest["artifacts"]
    except (OSError, ValueError, KeyError, TypeError):  # no manifest, or not ours: no facts
        return None
    target = engine_path.resolve()
    for record in records if isinstance(records, list) else []:
        path = record.get("path") if isinstance(record, dict) else None
        if isinstance(path, str) and (engine_path.parent / path).resolve() == target:
            return record
    return None


def check_flavour(built: str | None, installed: str, engine: str) -> None:
    """Refuse an engine built by the other SDK: its plan would not deserialize here."""
    if built is not None and built != installed:
        raise RuntimeUnavailableError(
            f"{engine} was built with {built}, but the installed SDK is {installed}: run it "
            f"where {built} is installed, or rebuild the engine here (partialnet-export)"
        )


def precision_words(recorded: str | None, io_dtypes: Iterable[str]) -> str:
    """fp32/fp16/int8...: the export's own record when there is one, else the I/O types.

    I/O types alone under-report an engine that casts float32 I/O to fp16 inside; the
    manifest beside the engine says it exactly.
    """
    if recorded:
        return recorded
    names = set(io_dtypes)
    return next((word for name, word in _PRECISION_WORDS.items() if name in names), "fp32")


class TensorRTRunner(Runner):
    """Deserializes ``engine_path`` and runs it with ``execute_async_v3`` on ``cuda:device``.

    ``flavour`` ("tensorrt" or "tensorrt-rtx") is the SDK the engine was built with; by
    default it is read from a manifest.json beside the engine when there is one.
    ``threads`` is accepted like every runner's and ignored: the GPU does the work.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        device: int = 0,
        flavour: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        base.check_options(threads)
        if flavour is not None:
            base.check_options(flavour=(flavour, (FLAVOUR_TENSORRT, FLAVOUR_RTX)))
        self.engine_path, self.device, self.flavour = Path(engine_path), device, flavour
        self.artifact_label = self.engine_path.name
        self._engine: Any = None  # set by activate(), with _context, _stream, _inputs, ...
        self._stream: int | None = None

    def _activate(self) -> None:
        # The file first: a wrong path is worth one clear line on any machine, GPU or not.
        base.check_artifact(self.engine_path, "TensorRT engine")
        record = engine_record(self.engine_path) or {}
        built = self.flavour or (record.get("details") or {}).get("flavour")
        trt, installed = import_tensorrt()
        check_flavour(built, installed, self.engine_path.name)
        cuda, count = _gpus()
        if not 0 <= self.device < count:
            raise UsageError(
                f"CUDA device {self.device} does not exist: this machine has {count} "
                f"(choose 0 to {count - 1})"
            )
        self._trt, self._flavour, self._logger = trt, installed, make_logger(trt)
        self._cuda = cuda
        # TensorRT works on the calling thread's current CUDA device: make it ours.
        cuda.set_device(self.device)
        self._load(trt)
        dtypes = [self._engine.get_tensor_dtype(n).name for n in self._inputs + self._outputs]
        self._precision = precision_words(record.get("precision"), dtypes)
        self._precision_source = "manifest" if record.get("precision") else "engine I/O types"
        self.input_shape, self.batch_range = self._input_shape(), self._batch_range()

    def _load(self, trt: Any) -> None:
        self._device_name = self._cuda.device_name(self.device)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:  # wrong SM, newer TensorRT, or not an engine at all
            raise RuntimeUnavailableError(
                f"cannot load {self.engine_path.name} on this GPU: {self._logger.errors[-3:]}; "
                "rebuild the engine for this GPU's compute capability and TensorRT version"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        if len(self._inputs) != 1 or not self._outputs:
            raise RuntimeUnavailableError(
                f"{self.engine_path.name} has inputs {self._inputs} and outputs "
                f"{self._outputs}; a PartialNet engine has one input and at least one output"
            )
        types = {n: self._engine.get_tensor_dtype(n).name for n in names}
        if unheld := sorted(f"{n} ({t})" for n, t in types.items() if t not in _NUMPY_DTYPES):
            raise RuntimeUnavailableError(
                f"{self.engine_path.name} has tensors numpy cannot hold: {', '.join(unheld)}; "
                "export the engine with float32 inputs and outputs (partialnet-export does)"
            )
        self._dtypes = {n: np.dtype(_NUMPY_DTYPES[t]) for n, t in types.items()}
        self._context = self._engine.create_execution_context()
        # Our own stream, made last (nothing after it can fail): other work on the default
        # stream neither waits on nor races it.
        self._stream = self._cuda.stream_create()
        self._buffers = DeviceBuffers(self._cuda)

    def _input_shape(self) -> tuple[int, ...]:
        return tuple(self._engine.get_tensor_shape(self._inputs[0]))

    def _batch_range(self) -> tuple[int, int]:
        shape = self._input_shape()
        if shape[0] >= 0:
            return shape[0], shape[0]
        lo, _, hi = self._engine.get_tensor_profile_shape(self._inputs[0], 0)
        return lo[0], hi[0]

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the engine by name (float outputs as float32)."""
        cuda, stream, name = self._cuda, self._stream, self._inputs[0]
        cuda.set_device(self.device)  # the calling thread's device may be another
        # TensorRT reads raw device memory: a transposed or sliced view must become a dense
        # array in the engine's input type before it is copied. It, and every output array,
        # stays alive here until the stream is synchronized.
        host = np.ascontiguousarray(batch, dtype=self._dtypes[name])
        self._context.set_input_shape(name, host.shape)
        pointers = {name: self._buffers.get(name, host.nbytes)}
        cuda.to_device(pointers[name], host, stream)
        self._context.set_tensor_address(name, pointers[name])
        outs = {}
        for out in self._outputs:
            outs[out] = np.empty(tuple(self._context.get_tensor_shape(out)), self._dtypes[out])
            pointers[out] = self._buffers.get(out, outs[out].nbytes)
            self._context.set_tensor_address(out, pointers[out])
        if not self._context.execute_async_v3(stream):
            raise RuntimeError(f"TensorRT execution failed: {self._logger.errors[-3:]}")
        for out, array in outs.items():
            cuda.to_host(array, pointers[out], stream)
        cuda.synchronize(stream)
        return {
            n: y.astype(np.float32, copy=False) if y.dtype.kind == "f" else y
            for n, y in outs.items()
        }

    def _info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime=self._flavour,
            version=str(self._trt.__version__),
            device=f"cuda:{self.device} ({self._device_name})",
            precision=self._precision,
            input_shape=self.input_shape,
            batch_range=self.batch_range,
            extra={
                "engine": str(self.engine_path),
                "outputs": list(self._outputs),
                "precision_source": self._precision_source,
            },
        )

    def _deactivate(self) -> None:
        # Context (its own device memory) before engine, then our buffers and the stream.
        self._context = self._engine = None
        if self._stream is not None:
            self._buffers.close()
            self._cuda.stream_destroy(self._stream)
        self._stream = None
