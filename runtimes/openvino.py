"""Run an OpenVINO IR (a directory holding the .xml/.bin pair, or the .xml itself) or an
ONNX model with OpenVINO on one physical device.

OpenVINO's CPU kernels block channels by 8/16: the inference form's ``SpatialGateOut`` keeps
its gate logit apart so the gated conv's channels stay a multiple of that, measured (t1 224
px, batch 1, one runtime at a time) 11-13% off fp32 and 24% off NNCF int8 latency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError

from . import base
from .base import UNBOUNDED_BATCH, Runner, RunnerInfo, Runtime, RuntimeUnavailableError

HINTS = ("latency", "throughput")
# Execution precision asked for -> OpenVINO's INFERENCE_PRECISION_HINT. OpenVINO otherwise
# picks by CPU (bf16 where AVX512_BF16 or AMX exists, f32 on AVX2, f16 on some others), so
# every request but "auto" is explicit; "auto" leaves the choice to OpenVINO.
_PRECISION_HINTS: dict[str, str | None] = {
    "fp32": "f32",
    "f32": "f32",
    "fp16": "f16",
    "f16": "f16",
    "bf16": "bf16",
    "auto": None,
}
PRECISIONS = tuple(_PRECISION_HINTS)
_PRECISION_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}  # reported in our words
# An IR cannot carry its execution precision: OpenVINO 2026.4's CPU plugin applies some
# ``runtime_options`` from a model's rt_info at compile time (KV_CACHE_PRECISION, measured),
# but ignores INFERENCE_PRECISION_HINT and EXECUTION_MODE_HINT there (measured: an fp32 IR
# with runtime_options/INFERENCE_PRECISION_HINT=f32 still compiles to bf16 on an AVX512_BF16
# CPU; its Config::applyRtInfo reads only the KV-cache and dynamic-quantization keys). So a
# plain ``compile_model(path, "CPU")`` runs the device's default, which ``info()`` reports
# as ``default_precision`` beside what this runner set.


def native_precisions(device: str = "CPU") -> frozenset[str]:
    """The reduced float precisions ``device`` computes natively, from its
    OPTIMIZATION_CAPABILITIES: BF16 on AVX512_BF16/AMX CPUs, FP16 on CPUs with fp16
    arithmetic (AMX-FP16, ARM). Elsewhere an fp16 IR runs in f32 (or bf16 where the CPU
    has that), so an fp16 artifact adds nothing that the fp32 IR executed in bf16 lacks."""
    ov = base.import_sdk("openvino", "openvino", "the OpenVINO runner")
    caps = set(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    return frozenset(n for cap, n in (("FP16", "fp16"), ("BF16", "bf16")) if cap in caps)


def _model_file(path: Path) -> Path:
    """An IR directory (as partialnet-export writes it) holds exactly one .xml."""
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.xml"))
    if len(found) != 1:
        raise UsageError(f"{path} holds {len(found)} .xml files; pass the IR's .xml file itself")
    return found[0]


class OpenVINORunner(Runner):
    """``precision`` is the execution precision (fp32, fp16, bf16, or auto for OpenVINO's own
    choice); ``info().precision`` is what the compiled model reports, which can differ from
    the request (an f16 hint on a CPU without f16 arithmetic compiles to f32 or bf16)."""

    name = Runtime.OPENVINO.value

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        hint: str = "latency",
        threads: int | None = None,
        precision: str = "fp32",
    ):
        super().__init__()
        base.check_options(
            threads, hint=(hint, HINTS), precision=(precision, tuple(_PRECISION_HINTS))
        )
        self.path, self.device, self.hint = Path(path), device, hint
        self.threads, self.precision = threads, precision
        self.artifact_label = self.path.name
        self.compiled: Any = None

    def _activate(self) -> None:
        ov = base.import_sdk("openvino", "openvino", "the OpenVINO runner")
        model_path = _model_file(base.check_artifact(self.path, "OpenVINO IR or ONNX model"))
        core = ov.Core()
        available = core.available_devices  # physical devices: CPU, GPU.0, NPU, ...
        if not any(d == self.device or d.startswith(f"{self.device}.") for d in available):
            raise RuntimeUnavailableError(
                f"OpenVINO device {self.device!r} was asked for, but this machine offers "
                f"{', '.join(available) or 'none'}: pick one of those, or install the "
                "device's driver (e.g. the Intel GPU compute runtime for 'GPU')"
            )
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.hint.upper()}
        if _PRECISION_HINTS[self.precision] is not None:
            config["INFERENCE_PRECISION_HINT"] = _PRECISION_HINTS[self.precision]
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        model = core.read_model(str(model_path))
        # The names the artifact declares (logits, feat0..feat3). A compiled model's output
        # may carry more: an fp16 IR's output Convert is folded away on compiling, and its
        # input's name ("add_2") joins the output's, which get_any_name() can return.
        self._outputs = [out.get_any_name() for out in model.outputs]
        compiled = core.compile_model(model, self.device, config)
        port, shape = compiled.inputs[0], compiled.inputs[0].get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)
        # A static batch has min == max; a dynamic one runs as is (no reshape), -1 = unbounded.
        lo, hi = shape[0].get_min_length(), shape[0].get_max_length()
        self.batch_range = (max(1, lo), hi if hi > 0 else UNBOUNDED_BATCH)
        self.input_dtype = port.get_element_type().to_dtype()
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._precision = _PRECISION_NAMES.get(actual, actual)
        self._default_precision = _device_default_precision(core, self.device)
        # One synchronous request: infer() is blocking; throughput hint only sizes streams.
        self._request, self.compiled = compiled.create_infer_request(), compiled
        self._version = ov.__version__

    def _deactivate(self) -> None:
        self._request = self.compiled = None

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self._request.infer({0: batch})
        return {
            name: np.asarray(result[port], dtype=np.float32)
            for name, port in zip(self._outputs, self.compiled.outputs, strict=True)
        }

    def _info(self) -> RunnerInfo:
        prop = self.compiled.get_property
        extra = {"hint": self.hint, "asked_precision": self.precision}
        # What this runner set, and what a plain compile_model on this device executes in.
        extra["precision_setting"] = "INFERENCE_PRECISION_HINT"  # the knob, by its name
        extra["precision_hint"] = _PRECISION_HINTS[self.precision]
        extra["default_precision"] = self._default_precision
        extra["streams"] = prop("NUM_STREAMS")
        if self.device.startswith("CPU"):
            extra["threads"] = prop("INFERENCE_NUM_THREADS")
        return RunnerInfo(
            self.name,
            self._version,
            self.device,
            self._precision,
            provider=self.device,
            input_shape=self.input_shape,
            batch_range=self.batch_range,
            extra=extra,
        )


def _device_default_precision(core: Any, device: str) -> str | None:
    """The execution precision OpenVINO picks on ``device`` when nothing asks for one (CPU:
    bf16 where AVX512_BF16 or AMX exists, f32 on AVX2), in our words; None where the device
    does not report it."""
    try:
        name = core.get_property(device, "INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # a plugin without the property (it is optional for devices)
        return None
    return _PRECISION_NAMES.get(name, name)


def cpu_matmul(path: Path, threads: int | None) -> Callable[[np.ndarray, np.ndarray], Any]:
    """The one-node MatMul ONNX at ``path`` compiled for the CPU in f32 (as the runner forces
    it), called on two operands: the bench's GEMM peak reference for this runtime."""
    ov = base.import_sdk("openvino", "openvino", "the OpenVINO runner")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda a, b: request.infer([a, b])
