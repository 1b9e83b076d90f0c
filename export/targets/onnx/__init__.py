"""onnx: the inference form through torch.export (dynamo) to a checked, simplified ONNX; int8
as Q/DQ ONNX (one flavour for ONNX Runtime, one per other target that declares a Q/DQ
recipe). The other ONNX-built targets start from the same file."""

from partialnet.export.options import Target
from partialnet.export.targets.base import BuiltFrom, Sdk, TargetSpec
from partialnet.export.targets.onnx.target import (
    QDQ,
    also_writes,
    build,
    for_runtime,
    runner_options,
)
from partialnet.export.targets.onnx.triton import TRITON
from partialnet.runtimes.base import Runtime

ONNX_SDKS = (Sdk("onnx", "onnx", "ONNX export"), Sdk("onnxscript", "onnx", "ONNX export"))
QDQ_SDKS = (Sdk("onnxruntime", "onnx", "INT8 ONNX quantization"),)

SPEC = TargetSpec(
    target=Target.ONNX,
    suffix=".onnx",
    runtime=Runtime.ONNXRUNTIME,
    built_from=BuiltFrom.INFERENCE,
    build=build,
    display="ONNX",
    summary="ONNX for ONNX Runtime",
    sdks=ONNX_SDKS,
    int8_sdks=QDQ_SDKS,
    packages=("onnxsim",),
    runner_options=runner_options,
    for_runtime=for_runtime,
    also_writes=also_writes,
    triton=TRITON,
    qdq=QDQ,
    parity_default=True,
    auto=True,
)
