"""coreml: the inference form through torch.export to a Core ML ML program (.mlpackage);
int8 as 8-bit weights. A fixed batch only."""

from partialnet.export.options import Target
from partialnet.export.targets.base import BuiltFrom, Sdk, TargetSpec
from partialnet.export.targets.coreml.target import OPTIONS, build, check_options
from partialnet.runtimes.base import Runtime

SPEC = TargetSpec(
    target=Target.COREML,
    suffix=".mlpackage",
    directory=True,
    runtime=Runtime.COREML,
    built_from=BuiltFrom.INFERENCE,
    build=build,
    display="CoreML",
    summary="Core ML package (simulated off macOS)",
    sdks=(Sdk("coremltools", "coreml", "CoreML export"),),
    options=OPTIONS,
    check_options=check_options,
    dynamic_batch=False,
)
