"""The OpenVINO target as a Triton model: the ``openvino`` backend on the CPU, the IR's .xml
as the model with its .bin beside it, and the backend's own performance hint and thread
count (``--triton-ov-hint``, ``--triton-ov-threads``) as config parameters."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.serving.backend import IO, TensorSpec, TritonBackend
from partialnet.export.targets.base import TargetOption
from partialnet.runtimes.base import import_sdk

OV_HINTS = ("latency", "throughput")

# OpenVINO element type names -> Triton DataType.
_OV_TYPES = {
    "f32": "TYPE_FP32",
    "f16": "TYPE_FP16",
    "bf16": "TYPE_BF16",
    "f64": "TYPE_FP64",
    "i32": "TYPE_INT32",
    "i64": "TYPE_INT64",
    "u8": "TYPE_UINT8",
    "i8": "TYPE_INT8",
    "boolean": "TYPE_BOOL",
}


def openvino_io(path: Path) -> IO:
    ov = import_sdk("openvino", "openvino", "reading an IR's inputs")
    model = ov.Core().read_model(str(path))

    def spec(port: Any) -> TensorSpec:
        kind = port.get_element_type().get_type_name()
        if kind not in _OV_TYPES:
            raise ExportFailure(f"{path.name}: {port.get_any_name()} has OpenVINO type {kind}")
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), _OV_TYPES[kind], dims)

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def _model_file(path: Path) -> Path:
    """An IR directory (as the export places it): its .xml."""
    if not path.is_dir():
        return path
    from partialnet.export.targets.openvino.convert import ir_xml

    return ir_xml(path)


def check_triton_options(options: Mapping[str, Any]) -> None:
    hint, threads = options.get("ov_hint", "latency"), options.get("ov_threads")
    if hint not in OV_HINTS:
        raise UsageError(f"ov_hint={hint!r} is not one of: {', '.join(OV_HINTS)}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UsageError(f"ov_threads must be a positive integer or None, got {threads!r}")


def _parameters(_details: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, str]:
    params = {"PERFORMANCE_HINT": str(options.get("ov_hint", "latency")).upper()}
    if options.get("ov_threads") is not None:
        params["INFERENCE_NUM_THREADS"] = str(options["ov_threads"])
    return params


OPTIONS = (
    TargetOption(
        "triton_ov_threads",
        "--triton-ov-threads",
        None,
        "OpenVINO backend: inference threads (default: the backend's)",
        metavar="N",
        type=int,
    ),
    TargetOption(
        "triton_ov_hint",
        "--triton-ov-hint",
        "latency",
        "OpenVINO backend: performance hint",
        choices=OV_HINTS,
    ),
)

TRITON = TritonBackend(
    config_field="backend",
    config_value="openvino",
    filename="model.xml",
    instance_kind="KIND_CPU",
    read_io=openvino_io,
    model_file=_model_file,
    companions=((".bin", "model.bin"),),  # the weights travel with the .xml, same stem
    parameters=_parameters,
    options=OPTIONS,
    check_options=check_triton_options,
)
