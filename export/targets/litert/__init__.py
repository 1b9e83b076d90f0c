"""litert: the inference form through litert-torch to a LiteRT (.tflite) model for Android;
fp16 weights and int8 with ai-edge-quantizer. A fixed batch only; not in ``--target all``
(its SDK caps typing-extensions: README, LiteRT): name it, ``--target all,litert``."""

from partialnet.export.options import Target
from partialnet.export.targets.base import BuiltFrom, Sdk, TargetSpec
from partialnet.export.targets.litert.target import OPTIONS, build, check_options
from partialnet.runtimes.base import Runtime

SPEC = TargetSpec(
    target=Target.LITERT,
    suffix=".tflite",
    runtime=Runtime.LITERT,
    built_from=BuiltFrom.INFERENCE,
    build=build,
    display="LiteRT",
    summary="LiteRT .tflite for Android (not in all: name it)",
    sdks=(
        Sdk("litert_torch", "litert", "LiteRT export"),
        Sdk("ai_edge_litert", "litert", "LiteRT export"),
        # fp16 weights and int8 go through it; the [litert] extra installs it with the rest.
        Sdk("ai_edge_quantizer", "litert", "LiteRT export"),
    ),
    packages=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"),
    options=OPTIONS,
    check_options=check_options,
    dynamic_batch=False,
    in_all=False,
)
