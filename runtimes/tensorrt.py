"""Run a serialized TensorRT (or TensorRT-RTX) engine on an NVIDIA GPU via torch CUDA tensors.

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
from .tensorrt_sdk import FLAVOUR_RTX, FLAVOUR_TENSORRT, import_tensorrt, make_logger

_TORCH_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}
# TensorRT DataType names -> the project's precision words, widest-first preference below.
_PRECISION_WORDS = {"INT8": "int8", "FP8": "fp8", "HALF": "fp16", "BF16": "bf16"}
_MANIFEST = "manifest.json"  # partialnet.export.manifest.MANIFEST_NAME (runtimes cannot import it)


def tensorrt_unavailable_reason() -> str | None:
    """None when an engine can run here (SDK importable and a CUDA GPU visible), else why not."""
    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        return str(exc)
    return _gpu_reason()


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return (
            "the TensorRT runner moves tensors with torch's CUDA, and torch is not installed: "
            "pip install torch (on a Jetson: NVIDIA's JetPack wheel)"
        )
    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else "; this torch is a CPU-only build"
        return (
            "TensorRT engines need an NVIDIA GPU; none is visible here "
            f"(torch.cuda.is_available() is False{build})"
        )
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

    def _activate(self) -> None:
        # The file first: a wrong path is worth one clear line on any machine, GPU or not.
        base.check_artifact(self.engine_path, "TensorRT engine")
        record = engine_record(self.engine_path) or {}
        built = self.flavour or (record.get("details") or {}).get("flavour")
        trt, installed = import_tensorrt()
        check_flavour(built, installed, self.engine_path.name)
        if (reason := _gpu_reason()) is not None:
            raise RuntimeUnavailableError(reason)
        import torch

        if not 0 <= self.device < torch.cuda.device_count():
            raise UsageError(
                f"CUDA device {self.device} does not exist: this machine has "
                f"{torch.cuda.device_count()} (choose 0 to {torch.cuda.device_count() - 1})"
            )
        self._trt, self._flavour, self._logger = trt, installed, make_logger(trt)
        # TensorRT works on the current CUDA device: make it ours while loading.
        with torch.cuda.device(self.device):
            self._load(trt, torch)
        dtypes = [self._engine.get_tensor_dtype(n).name for n in self._inputs + self._outputs]
        self._precision = precision_words(record.get("precision"), dtypes)
        self._precision_source = "manifest" if record.get("precision") else "engine I/O types"
        self.input_shape, self.batch_range = self._input_shape(), self._batch_range()

    def _load(self, trt: Any, torch: Any) -> None:
        self._device_name = torch.cuda.get_device_name(self.device)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:  # wrong SM, newer TensorRT, or not an engine at all
            raise RuntimeUnavailableError(
                f"cannot load {self.engine_path.name} on this GPU: {self._logger.errors[-3:]}; "
                "rebuild the engine for this GPU's compute capability and TensorRT version"
            )
        self._context = self._engine.create_execution_context()
        # Our own stream: other torch work on the default stream neither waits on nor races it.
        self._stream = torch.cuda.Stream(device=self.device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        if len(self._inputs) != 1 or not self._outputs:
            raise RuntimeUnavailableError(
                f"{self.engine_path.name} has inputs {self._inputs} and outputs "
                f"{self._outputs}; a PartialNet engine has one input and at least one output"
            )

    def _torch_dtype(self, tensor: str) -> Any:
        import torch

        return getattr(torch, _TORCH_DTYPES[self._engine.get_tensor_dtype(tensor).name])

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
        import torch

        # TensorRT reads raw memory at data_ptr(): a transposed or sliced view would be read
        # in storage order, i.e. wrong. A dense copy on the host keeps the device copy dense.
        host = torch.from_numpy(np.ascontiguousarray(batch))
        name = self._inputs[0]
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            x = host.to(f"cuda:{self.device}", self._torch_dtype(name)).contiguous()
            self._context.set_input_shape(name, tuple(x.shape))
            self._context.set_tensor_address(name, x.data_ptr())
            # The engine writes device memory directly: keep every tensor alive until synced.
            outs = {}
            for out in self._outputs:
                shape = tuple(self._context.get_tensor_shape(out))
                outs[out] = torch.empty(shape, dtype=self._torch_dtype(out), device=x.device)
                self._context.set_tensor_address(out, outs[out].data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed: {self._logger.errors[-3:]}")
            self._stream.synchronize()
            return {
                n: (y.float() if y.is_floating_point() else y).cpu().numpy()
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
        # Context (device memory) before engine, then the stream they ran on.
        self._context = self._engine = self._stream = None
