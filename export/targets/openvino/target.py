"""How the OpenVINO target is built in scratch (from the ONNX), and opened to verify it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from partialnet.export.options import Precision, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, opener
from partialnet.runtimes.base import Runtime

log = logging.getLogger(__name__)


# What the runner's ``precision`` option takes: OpenVINO computes an IR in any of them
# (bf16 on CPUs with AVX512_BF16 or AMX), "auto" being its own choice for the CPU. Without
# native fp16 it reports computing an fp16 IR in f32, about as fast as the fp32 IR.
EXECUTION_PRECISIONS = ("fp32", "fp16", "bf16", "auto")


def artifact_runner_options(precision: str, _details: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact's own precision (f32 for fp32 and for int8's unquantized ops; bf16 for
    the fp32 IR that ``--precision auto`` chose to execute in bf16): OpenVINO's own choice
    would be bf16 on some CPUs."""
    return {"precision": precision if precision in ("fp16", "bf16") else "fp32"}


def runner_options(precision: Precision) -> dict[str, Any]:
    return artifact_runner_options(precision.value, {})


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    from partialnet.export.targets.openvino.convert import export_openvino, ir_xml

    onnx_path, _ = ctx.onnx()
    name = ctx.artifact_name(Target.OPENVINO)
    staged = ctx.scratch / name
    runner = opener(Runtime.OPENVINO, **runner_options(ctx.options.precision))
    if ctx.int8:
        from partialnet.export.targets.openvino.int8 import quantize_openvino

        log.info("      int8: NNCF calibration of the OpenVINO model")
        if ctx.int8_fallback:
            from partialnet.export.targets.openvino.fallback import with_fallback

            facts = with_fallback(ctx, onnx_path, staged, runner)
        else:
            facts = quantize_openvino(
                onnx_path, ir_xml(staged), ctx.calibration_batches(), metadata=ctx.metadata
            )
    else:
        facts = export_openvino(
            onnx_path,
            staged,
            metadata=ctx.metadata,
            compress_to_fp16=ctx.options.precision is Precision.FP16,
        )
    return [BuiltArtifact(Target.OPENVINO, staged, name, facts, None, runner)]
