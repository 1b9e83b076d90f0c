"""Run a serialized TensorRT (or TensorRT-RTX) engine on an NVIDIA GPU via torch CUDA tensors.

UNTESTED: the GPU path (activate past its check, infer, info) was written without a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import MissingDependencyError
from partialnet.runtimes.base import Runner, RunnerInfo, RuntimeUnavailableError
from partialnet.runtimes.tensorrt_sdk import import_tensorrt, make_logger

_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32"}


def tensorrt_unavailable_reason() -> str | None:
    """None when an engine can run here (SDK importable and a CUDA GPU visible), else why not."""
    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        return str(exc)
    import torch

    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else "; this torch is a CPU-only build"
        return (
            "TensorRT engines need an NVIDIA GPU; none is visible here "
            f"(torch.cuda.is_available() is False{build})"
        )
    return None


class TensorRTRunner(Runner):
    """Deserializes ``engine_path`` and runs it with ``execute_async_v3`` on ``cuda:device``."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, device: int = 0) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.device = device
        self._engine: Any = None  # set by activate(), with _context/_input/_outputs

    def activate(self) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise RuntimeUnavailableError(reason)
        import torch

        trt, self._flavour = import_tensorrt()
        self._trt, self._logger = trt, make_logger(trt)
        torch.cuda.set_device(self.device)
        self._device_name = torch.cuda.get_device_name(self.device)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:  # wrong SM, newer TensorRT, or not an engine at all
            raise RuntimeUnavailableError(
                f"cannot load {self.engine_path.name} on this GPU: {self._logger.errors[-3:]}; "
                "rebuild the engine for this GPU's compute capability and TensorRT version"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == mode)
        # In the network's I/O order, which the parser takes from the ONNX graph outputs.
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        self._active = True

    def _torch_dtype(self, tensor: str) -> Any:
        import torch

        return getattr(torch, _TORCH_DTYPES[self._engine.get_tensor_dtype(tensor).name])

    def _batch_range(self) -> tuple[int, int]:
        shape = tuple(self._engine.get_tensor_shape(self._input))
        if shape[0] >= 0:
            return shape[0], shape[0]
        lo, _, hi = self._engine.get_tensor_profile_shape(self._input, 0)
        return lo[0], hi[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return next(iter(self.infer_all(batch).values()))

    def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        from partialnet.runtimes.base import check_batch

        self._require_active()
        shape = tuple(self._engine.get_tensor_shape(self._input))
        check_batch(batch, shape, self._batch_range(), self.engine_path.name)
        # The engine reads/writes device memory directly: keep the tensors alive until synced.
        x = torch.from_numpy(batch).to(f"cuda:{self.device}", self._torch_dtype(self._input))
        self._context.set_input_shape(self._input, tuple(x.shape))
        self._context.set_tensor_address(self._input, x.data_ptr())
        outs: dict[str, torch.Tensor] = {}
        for name in self._outputs:  # shapes are known once the input shape is set
            out_shape = tuple(self._context.get_tensor_shape(name))
            outs[name] = torch.empty(out_shape, dtype=self._torch_dtype(name), device=x.device)
            self._context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed: {self._logger.errors[-3:]}")
        stream.synchronize()
        return {name: y.float().cpu().numpy() for name, y in outs.items()}

    def info(self) -> RunnerInfo:
        self._require_active()
        return RunnerInfo(
            runtime=self._flavour,
            version=str(self._trt.__version__),
            device=f"cuda:{self.device} ({self._device_name})",
            # I/O dtype; compute precision follows the ONNX types the engine was built from.
            precision=str(self._torch_dtype(self._input)).removeprefix("torch."),
            input_shape=tuple(self._engine.get_tensor_shape(self._input)),
            batch_range=self._batch_range(),
            extra={"engine": str(self.engine_path)},
        )

    def deactivate(self) -> None:
        self._context = self._engine = None  # left to right: context (device memory) first
        super().deactivate()
