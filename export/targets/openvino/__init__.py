"""openvino: the ONNX converted to an OpenVINO IR directory (the .xml/.bin pair moves as one);
int8 through NNCF post-training quantization."""

from partialnet.export.options import Target
from partialnet.export.targets.base import BuiltFrom, Sdk, TargetSpec
from partialnet.export.targets.onnx import ONNX_SDKS
from partialnet.export.targets.openvino.target import (
    EXECUTION_PRECISIONS,
    artifact_runner_options,
    build,
    runner_options,
)
from partialnet.export.targets.openvino.triton import TRITON
from partialnet.runtimes.base import Runtime

SPEC = TargetSpec(
    target=Target.OPENVINO,
    suffix=".openvino",  # a directory: the .xml/.bin pair moves as one
    directory=True,
    runtime=Runtime.OPENVINO,
    built_from=BuiltFrom.ONNX,
    build=build,
    display="OpenVINO",
    summary="OpenVINO IR",
    sdks=(*ONNX_SDKS, Sdk("openvino", "openvino", "OpenVINO export")),
    int8_sdks=(Sdk("nncf", "int8", "INT8 OpenVINO quantization"),),
    runner_options=runner_options,
    artifact_runner_options=artifact_runner_options,
    execution_precisions=EXECUTION_PRECISIONS,
    parity_default=True,
    auto=True,
    triton=TRITON,
)
