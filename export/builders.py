"""Per-target work derived from the registered specs (``partialnet.export.targets``): the SDK
check and option checks before anything is written, and the dispatch to each target's
builder, which writes in the scratch directory only."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from partialnet.export.options import ExportOptions, Precision, Target
from partialnet.export.targets import TargetSpec, spec_of
from partialnet.export.targets.base import BuiltArtifact, TargetContext

__all__ = [
    "BuiltArtifact",
    "TargetContext",
    "build_target",
    "check_sdks",
    "check_target_options",
]


def _needed(options: ExportOptions) -> list[TargetSpec]:
    return [spec_of(t) for t in options.targets]


def check_sdks(options: ExportOptions) -> None:
    """Fail before any work when an SDK a target needs is missing (names the extra).

    Looks the packages up without importing them (some SDKs are slow and noisy to import).
    """
    from partialnet.errors import missing_dependency

    specs = _needed(options)
    int8 = options.precision is Precision.INT8
    seen: set[str] = set()
    for spec in specs:
        for sdk in (*spec.sdks, *(spec.int8_sdks if int8 else ())):
            if sdk.module in seen:
                continue
            seen.add(sdk.module)
            if (sdk.module in sys.modules and sys.modules[sdk.module] is None) or not _findable(
                sdk.module
            ):
                raise missing_dependency(sdk.module, sdk.extra, sdk.purpose)
    for spec in specs:
        if spec.check_sdk is not None:
            spec.check_sdk()


def check_target_options(options: ExportOptions, num_classes: int) -> dict[Target, Any]:
    """Validate every target's own options before anything is written; what each check
    returns (e.g. a converter's validated options) is what its builder reads back."""
    checked = {}
    for spec in _needed(options):
        if spec.check_options is not None:
            checked[spec.target] = spec.check_options(options, num_classes)
    return checked


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_target(target: Target, ctx: TargetContext) -> list[BuiltArtifact]:
    """The target's artifacts in scratch (int8 ONNX: one per Q/DQ flavour)."""
    from partialnet.backbone import describe_outputs

    built = spec_of(target).build(ctx)
    batch = None if ctx.options.dynamic_batch else ctx.options.batch
    for item in built:
        # Every output's name, shape and stride (a backbone's four maps, or the logits).
        item.details["outputs"] = describe_outputs(ctx.inference, batch)
    return built
