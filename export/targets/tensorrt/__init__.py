"""trt: a serialized TensorRT engine built from the ONNX (strongly typed: fp16 from the fp16
ONNX, int8 from a symmetric Q/DQ ONNX); TensorRT-RTX builds ahead of time without a GPU."""

from partialnet.export.options import Target
from partialnet.export.targets.base import BuiltFrom, TargetSpec
from partialnet.export.targets.onnx import ONNX_SDKS, QDQ_SDKS
from partialnet.export.targets.tensorrt.qdq import QDQ
from partialnet.export.targets.tensorrt.target import (
    OPTIONS,
    artifact_runner_options,
    build,
    check_options,
    check_sdk,
)
from partialnet.export.targets.tensorrt.triton import TRITON
from partialnet.runtimes.base import Runtime

SPEC = TargetSpec(
    target=Target.TRT,
    suffix=".engine",
    runtime=Runtime.TENSORRT,
    built_from=BuiltFrom.ONNX,
    build=build,
    display="TensorRT",
    summary="TensorRT engine (needs an NVIDIA GPU to run)",
    sdks=ONNX_SDKS,
    int8_sdks=QDQ_SDKS,
    options=OPTIONS,
    check_options=check_options,
    check_sdk=check_sdk,
    artifact_runner_options=artifact_runner_options,
    triton=TRITON,
    qdq=QDQ,
)
