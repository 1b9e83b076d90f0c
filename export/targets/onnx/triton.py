"""The ONNX target as a Triton model: ONNX Runtime's platform, on the CPU, its inputs and
outputs read from the graph (also for the targets whose artifacts are built from it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialnet.export.errors import ExportFailure
from partialnet.export.serving.backend import IO, TensorSpec, TritonBackend
from partialnet.runtimes.base import import_sdk

# ONNX TensorProto element type names -> Triton DataType.
_ONNX_TYPES = {
    "FLOAT": "TYPE_FP32",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "DOUBLE": "TYPE_FP64",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "BOOL": "TYPE_BOOL",
}


def onnx_io(path: Path) -> IO:
    """The graph's inputs (weights left out) and outputs, as Triton types and dims."""
    onnx = import_sdk("onnx", "onnx", "reading an ONNX model's inputs")
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type)
        dtype = _ONNX_TYPES.get(kind)
        if dtype is None:
            raise ExportFailure(f"{path.name}: {value.name} has ONNX type {kind}, not servable")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, dtype, dims)

    inputs = [spec(v) for v in graph.input if v.name not in weights]
    return inputs, [spec(v) for v in graph.output]


TRITON = TritonBackend(
    config_field="platform",
    config_value="onnxruntime_onnx",
    filename="model.onnx",
    instance_kind="KIND_CPU",
    read_io=onnx_io,
)
