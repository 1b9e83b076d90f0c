"""How the TensorRT target is built in scratch (from the ONNX, or int8's TensorRT Q/DQ ONNX),
its options checked before any work, and its engine opened to verify it (GPU only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialnet.export.options import ExportOptions, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, opener
from partialnet.runtimes.base import Runtime


def check_options(options: ExportOptions, num_classes: int) -> Any:
    """The build config; refuses an unknown compute capability or batch range up front."""
    from partialnet.export.targets.tensorrt.build import TensorRTBuildConfig

    return TensorRTBuildConfig(
        compute_capability=options.trt_compute_capability,
        workspace_mb=options.workspace_mb,
        dynamic_batch=options.dynamic_batch,
    )


def check_sdk() -> object:
    """TensorRT must load to say which flavour (full or RTX) is installed."""
    from partialnet.runtimes.tensorrt_sdk import import_tensorrt

    return import_tensorrt()


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    from partialnet.export.targets.tensorrt.build import build_engine
    from partialnet.runtimes.tensorrt import tensorrt_unavailable_reason

    # int8: the symmetric Q/DQ graph with float biases that TensorRT's parser takes.
    onnx_path, _ = ctx.qdq_onnx("tensorrt") if ctx.int8 else ctx.onnx()
    name = ctx.artifact_name(Target.TRT)
    staged = ctx.scratch / name
    config = ctx.target_options.get(Target.TRT) or check_options(ctx.options, 0)
    facts = build_engine(onnx_path, staged, config)
    # Scratch paths mean nothing once the export is done.
    facts.pop("engine", None)
    facts["onnx"] = onnx_path.name
    if facts.get("timing_cache"):
        facts["timing_cache"] = Path(facts["timing_cache"]).name
    reason = tensorrt_unavailable_reason()
    # The flavour from the build: scratch has no manifest beside the engine to read it from.
    runner = opener(Runtime.TENSORRT, flavour=facts["flavour"])
    return [BuiltArtifact(Target.TRT, staged, name, facts, reason, runner)]
