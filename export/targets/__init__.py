"""The targets, registered once: every list of target names, CLI choice, SDK check, builder
dispatch and target <-> runtime map is derived from ``TARGETS``.

Adding a target: its package here (``SPEC = TargetSpec(...)`` in its ``__init__``, its
builder, converter and option checks beside it) and its name in the ``Target`` enum; its
runner in ``partialnet.runtimes`` with its ``Runtime`` name and ``RuntimeSpec`` line; then
one line in ``TARGETS`` (and the SDK's extra in pyproject.toml). CLI choices and help, the
SDK check, export order, version table and bench's name lists follow from the specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.options import Target
from partialnet.export.targets.base import (
    BuiltArtifact,
    BuiltFrom,
    QdqRecipe,
    Sdk,
    TargetContext,
    TargetOption,
    TargetSpec,
)
from partialnet.export.targets.coreml import SPEC as COREML
from partialnet.export.targets.litert import SPEC as LITERT
from partialnet.export.targets.onnx import SPEC as ONNX
from partialnet.export.targets.openvino import SPEC as OPENVINO
from partialnet.export.targets.tensorrt import SPEC as TENSORRT
from partialnet.runtimes.base import Runtime

# Export order: the targets built from the ONNX follow it (it is written once, shared).
TARGETS: tuple[TargetSpec, ...] = (ONNX, OPENVINO, TENSORRT, COREML, LITERT)

_BY_TARGET = {spec.target: spec for spec in TARGETS}
_BY_RUNTIME = {spec.runtime: spec for spec in TARGETS}


def spec_of(target: Target | str) -> TargetSpec:
    return _BY_TARGET[Target(target)]


def spec_for_runtime(runtime: Runtime | str) -> TargetSpec | None:
    """The target whose artifacts ``runtime`` runs; None for torch (or an unknown name)."""
    try:
        return _BY_RUNTIME.get(Runtime(runtime))
    except ValueError:
        return None


def qdq_recipes() -> list[QdqRecipe]:
    """The int8 Q/DQ ONNX recipes the targets declare, in export order."""
    return [spec.qdq for spec in TARGETS if spec.qdq is not None]


def with_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every target's own options: the given ones over the defaults; an unknown name is
    refused with the valid ones."""
    options = {o.name: o for spec in TARGETS for o in spec.options}
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise UsageError(
            f"unknown export option(s) {', '.join(unknown)}; the targets' own options are: "
            f"{', '.join(options)}"
        )
    return {name: given.get(name, o.default) for name, o in options.items()}


def runtime_of(target: str | Target) -> str | None:
    """The runtime name ('onnxruntime', ...) for a target name, None for an unknown one."""
    try:
        return spec_of(target).runtime.value
    except ValueError:
        return None


def target_of(runtime: str | Runtime) -> str | None:
    """The target name ('onnx', ...) whose artifacts a runtime runs; None for torch."""
    spec = spec_for_runtime(runtime)
    return spec.name if spec is not None else None


def toolchain_packages() -> dict[str, tuple[str, ...]]:
    """The SDK distributions whose versions manifests and reports record: every runtime's
    and every target's (name reported -> distributions to try)."""
    from partialnet.runtimes.registry import runtime_packages

    found: dict[str, tuple[str, ...]] = {}
    for spec in TARGETS:
        for sdk in (*spec.sdks, *spec.int8_sdks):
            found.setdefault(sdk.module, (sdk.module,))
        for name in spec.packages:
            found.setdefault(name, (name,))
    return found | runtime_packages()


__all__ = [
    "TARGETS",
    "BuiltArtifact",
    "BuiltFrom",
    "QdqRecipe",
    "Sdk",
    "TargetContext",
    "TargetOption",
    "TargetSpec",
    "qdq_recipes",
    "runtime_of",
    "spec_for_runtime",
    "spec_of",
    "target_of",
    "toolchain_packages",
    "with_defaults",
]
