"""How the ONNX target is built in scratch, and how its artifacts are opened to verify them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partialnet.export.options import Precision, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, opener
from partialnet.runtimes.base import Runtime

_SERVES = {"onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT"}


def for_runtime(details: Mapping[str, Any]) -> bool:
    """int8 writes two Q/DQ graphs; ONNX Runtime runs (and serves) its own flavour only."""
    return details.get("flavour") != "tensorrt"


def also_writes(stem: str, precision: Precision) -> tuple[str, ...]:
    """int8 places the TensorRT flavour's graph beside the ONNX Runtime one."""
    return (f"{stem}-tensorrt.onnx",) if precision is Precision.INT8 else ()


def runner_options(precision: Precision) -> dict[str, Any]:
    # Spinning off: the gate and the parity cells run right after torch's reference, on the
    # same cores, and spinning threads would steal from it.
    return {"allow_spinning": False}


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    runner = opener(Runtime.ONNXRUNTIME, **runner_options(ctx.options.precision))
    if ctx.int8:
        # One graph cannot serve both: ONNX Runtime is fastest with uint8 activations and
        # int32 biases, which TensorRT refuses (see partialnet.export.targets.onnx.int8).
        flavours = ("onnxruntime",) if ctx.options.own_runtime_only else tuple(_SERVES)
        built = []
        for flavour in flavours:
            path, facts = ctx.qdq_onnx(flavour)
            facts = {**facts, "serves": _SERVES[flavour]}
            built.append(BuiltArtifact(Target.ONNX, path, path.name, facts, None, runner))
        return built
    path, facts = ctx.onnx()
    return [BuiltArtifact(Target.ONNX, path, ctx.artifact_name(Target.ONNX), facts, None, runner)]
