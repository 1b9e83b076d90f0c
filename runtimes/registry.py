"""Which runtimes can run here, and one factory that opens a runner for any of them.

Every runner module is imported only when its runtime is asked for, so listing what is
available imports no SDK except TensorRT's own probe (it must load CUDA to know).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError, missing_dependency

from .base import Runner, Runtime


def _sdk_reason(module: str, extra: str, purpose: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return str(missing_dependency(module, extra, purpose))
    return None


def _tensorrt_reason() -> str | None:
    try:
        from .tensorrt import tensorrt_unavailable_reason
    except ModuleNotFoundError as err:  # only the runner module itself absent; else re-raised
        if err.name != f"{__package__}.tensorrt":
            raise
        return f"this install has no TensorRT runner ({err.name} is missing)"
    return tensorrt_unavailable_reason()


def _coreml_reason() -> str | None:
    """Core ML on macOS; elsewhere the runner simulates it with the MIL interpreter."""
    if sys.platform == "darwin":
        return _sdk_reason("coremltools", "coreml", "the CoreML runner")
    from .coreml_mil import coremltools_unsupported_reason

    missing = _sdk_reason("coremltools", "coreml", "the simulated CoreML runner")
    return missing or coremltools_unsupported_reason()


_REASONS: dict[Runtime, Callable[[], str | None]] = {
    Runtime.TORCH: lambda: None,  # torch is a required dependency
    Runtime.ONNXRUNTIME: lambda: _sdk_reason("onnxruntime", "onnx", "the ONNX Runtime runner"),
    Runtime.OPENVINO: lambda: _sdk_reason("openvino", "openvino", "the OpenVINO runner"),
    Runtime.TENSORRT: _tensorrt_reason,
    Runtime.COREML: _coreml_reason,
    # LiteRT (issue 16): port to the target registry (issue 15).
    Runtime.LITERT: lambda: _sdk_reason("ai_edge_litert", "litert", "the LiteRT runner"),
}


def available_runtimes() -> dict[str, str | None]:
    """Every runtime name -> None if it can run here, else the reason it cannot."""
    return {runtime.value: _REASONS[runtime]() for runtime in Runtime}


def _runner_class(runtime: Runtime) -> type[Runner]:
    if runtime is Runtime.TORCH:
        from .torch_runner import TorchRunner as cls
    elif runtime is Runtime.ONNXRUNTIME:
        from .onnxruntime import OnnxRuntimeRunner as cls
    elif runtime is Runtime.OPENVINO:
        from .openvino import OpenVINORunner as cls
    elif runtime is Runtime.TENSORRT:
        from .tensorrt import TensorRTRunner as cls
    elif runtime is Runtime.LITERT:  # issue 16; port to the target registry (issue 15)
        from .litert import LiteRTRunner as cls
    else:
        from .coreml import CoreMLRunner as cls
    return cls


def parse_runtime(runtime: Runtime | str) -> Runtime:
    """The ``Runtime`` for a name like ``"openvino"``; a ``UsageError`` lists the valid ones."""
    try:
        return Runtime(runtime)
    except ValueError:
        valid = ", ".join(r.value for r in Runtime)
        raise UsageError(f"unknown runtime {runtime!r}: choose one of {valid}") from None


def open_runner(runtime: Runtime | str, artifact: Any, **options: Any) -> Runner:
    """A runner for ``artifact``, not yet active: use it as ``with open_runner(...) as r:``.

    ``artifact`` is a ``torch.nn.Module`` for ``"torch"`` and a file path for the others;
    ``options`` go to the runner (``threads``, ``provider``, ``device``, ``precision``, ...).
    """
    runtime = parse_runtime(runtime)
    is_path = isinstance(artifact, (str, Path))
    if (runtime is Runtime.TORCH) == is_path:
        wanted = "a torch.nn.Module" if runtime is Runtime.TORCH else "a file path"
        raise UsageError(
            f"runtime {runtime.value!r} opens {wanted}, got {type(artifact).__name__}: "
            "pass an exported artifact's path for the SDK runtimes, the model for 'torch'"
        )
    return _runner_class(runtime)(artifact, **options)
