"""How the TensorRT target is built in scratch (from the ONNX, or int8's TensorRT Q/DQ ONNX),
its options checked before any work, and its engine opened to verify it (GPU only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.options import ExportOptions, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, TargetOption, opener
from partialnet.export.targets.tensorrt.qdq import QDQ
from partialnet.runtimes.base import Runtime


def check_workspace(workspace_mb: int | None) -> None:
    """A TensorRT builder workspace is a positive whole number of MiB, or None (TensorRT's)."""
    w = workspace_mb
    # 0 MB is refused too: the builder cannot compile even a tiny graph without scratch.
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
        raise UsageError(
            f"--workspace {w!r} is not a positive whole number of MiB: pass e.g. 1024, or "
            "leave it out to let TensorRT use what the GPU has"
        )


OPTIONS = (
    TargetOption(
        "trt_compute_capability",
        "--trt-compute-capability",
        "SM89",
        "GPU architecture for ahead-of-time builds (TensorRT-RTX)",
        metavar="SMxx",
    ),
    TargetOption(
        "workspace_mb",
        "--workspace",
        None,
        "builder workspace limit (default: TensorRT's)",
        metavar="MiB",
        type=int,
        check=check_workspace,
    ),
)


def check_options(options: ExportOptions, num_classes: int) -> Any:
    """The build config; refuses an unknown compute capability or batch range up front."""
    from partialnet.export.targets.tensorrt.build import TensorRTBuildConfig

    own = options.target_options
    return TensorRTBuildConfig(
        compute_capability=own.get("trt_compute_capability", "SM89"),
        workspace_mb=own.get("workspace_mb"),
        dynamic_batch=options.dynamic_batch,
    )


def check_sdk() -> object:
    """TensorRT must load to say which flavour (full or RTX) is installed."""
    from partialnet.runtimes.tensorrt_sdk import import_tensorrt

    return import_tensorrt()


def artifact_runner_options(_precision: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """The SDK flavour the engine was built with (full TensorRT or TensorRT-RTX)."""
    return {"flavour": details["flavour"]} if details.get("flavour") else {}


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    from partialnet.export.targets.tensorrt.build import build_engine
    from partialnet.runtimes.tensorrt import tensorrt_unavailable_reason

    # int8: the symmetric Q/DQ graph with float biases that TensorRT's parser takes.
    onnx_path, _ = ctx.qdq_onnx(QDQ.flavour) if ctx.int8 else ctx.onnx()
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
