"""Which runtimes can run here, and one factory that opens a runner for any of them.

Every runner module is imported only when its runtime is asked for, so listing what is
available imports no SDK except TensorRT's own probe (it must load CUDA to know).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError, missing_dependency

from .base import Runner, Runtime


def _sdk_reason(module: str, extra: str, purpose: str) -> str | None:
    """Why a runner's SDK is missing, with both installs: the runtime's own package alone
    (a device runs a check torch-free: README "On the device") and the exporter's extra."""
    if importlib.util.find_spec(module) is None:
        dist = module.replace("_", "-")  # onnxruntime, openvino, coremltools, ai-edge-litert
        return f"{missing_dependency(module, extra, purpose)} (on a device: pip install {dist})"
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


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime, registered once: its runner (imported only when opened), why it cannot
    run here (None: it can), and the distributions whose versions reports record."""

    runtime: Runtime
    runner: str  # "module:Class", relative to this package
    reason: Callable[[], str | None]
    packages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> dists
    controls_threads: bool = True  # False: takes ``threads`` for uniformity, ignores it
    # ONNX Runtime's execution provider for the same backend and the device it runs on: the
    # ONNX runner's ``provider=<runtime name>`` (None: ONNX Runtime has none).
    ort_provider: tuple[str, str] | None = None
    # "module:function" compiling a one-MatMul ONNX for the CPU as its runner would, relative
    # to this package: the bench's GEMM peak reference (None: no CPU matmul to compare with).
    cpu_matmul: str | None = None
    # "module:function" -> the reduced float precisions ("fp16", "bf16") it computes natively
    # on this CPU (faster than fp32, not fp32 behind casts); None: none anywhere we know of.
    native_arithmetic: str | None = None

    def runner_class(self) -> type[Runner]:
        return _resolve(self.runner)

    def cpu_matmul_opener(self) -> Callable[..., Any] | None:
        return _resolve(self.cpu_matmul) if self.cpu_matmul else None

    def native_precisions(self) -> frozenset[str]:
        """The reduced float precisions this runtime computes natively here (none if unsure)."""
        if self.native_arithmetic is None or self.reason() is not None:
            return frozenset()
        return frozenset(_resolve(self.native_arithmetic)())


def _resolve(reference: str) -> Any:
    """ "module:name", the module relative to this package, imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module, __package__), name)


RUNTIMES: tuple[RuntimeSpec, ...] = (
    # torch is a required dependency: it always runs.
    RuntimeSpec(Runtime.TORCH, ".torch_runner:TorchRunner", lambda: None),
    RuntimeSpec(
        Runtime.ONNXRUNTIME,
        ".onnxruntime:OnnxRuntimeRunner",
        lambda: _sdk_reason("onnxruntime", "onnx", "the ONNX Runtime runner"),
        {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")},
        cpu_matmul=".onnxruntime:cpu_matmul",
        native_arithmetic=".onnxruntime:native_precisions",
    ),
    RuntimeSpec(
        Runtime.OPENVINO,
        ".openvino:OpenVINORunner",
        lambda: _sdk_reason("openvino", "openvino", "the OpenVINO runner"),
        {"openvino": ("openvino",)},
        ort_provider=("OpenVINOExecutionProvider", "openvino"),
        cpu_matmul=".openvino:cpu_matmul",
        native_arithmetic=".openvino:native_precisions",
    ),
    RuntimeSpec(
        Runtime.TENSORRT,
        ".tensorrt:TensorRTRunner",
        _tensorrt_reason,
        {
            "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
            "tensorrt-rtx": ("tensorrt-rtx-cu12-bindings",),
        },
        controls_threads=False,  # the GPU does the work
        ort_provider=("TensorrtExecutionProvider", "cuda"),
    ),
    RuntimeSpec(
        Runtime.COREML,
        ".coreml:CoreMLRunner",
        _coreml_reason,
        {"coremltools": ("coremltools",)},
        controls_threads=False,  # Core ML schedules its own threads
        ort_provider=("CoreMLExecutionProvider", "apple"),
    ),
    RuntimeSpec(
        Runtime.LITERT,
        ".litert:LiteRTRunner",
        lambda: _sdk_reason("ai_edge_litert", "litert", "the LiteRT runner"),
        {"ai-edge-litert": ("ai-edge-litert",), "litert-torch": ("litert-torch",)},
    ),
)
_BY_RUNTIME = {spec.runtime: spec for spec in RUNTIMES}


def runtime_spec(runtime: Runtime | str) -> RuntimeSpec:
    return _BY_RUNTIME[parse_runtime(runtime)]


def available_runtimes() -> dict[str, str | None]:
    """Every runtime name -> None if it can run here, else the reason it cannot."""
    return {spec.runtime.value: spec.reason() for spec in RUNTIMES}


def runtime_packages() -> dict[str, tuple[str, ...]]:
    """Every runtime's SDK distributions (name reported -> distributions to try)."""
    return {name: dists for spec in RUNTIMES for name, dists in spec.packages.items()}


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
    return _BY_RUNTIME[runtime].runner_class()(artifact, **options)
