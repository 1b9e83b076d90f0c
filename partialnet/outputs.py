"""The names of what a PartialNet returns, spelled once: ``logits`` for a classifier, and
``feat0``..``feat3`` (strides 4 to 32) for a backbone. Every export, runner and parity
reference names outputs through here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

LOGITS = "logits"
FEATURE_COUNT = 4  # one map per stage

T = TypeVar("T")


def feature_names(count: int = FEATURE_COUNT) -> list[str]:
    """Output names in stride order, as the ONNX export and the runners name them."""
    return [f"feat{i}" for i in range(count)]


def is_backbone(model: Any) -> bool:
    """A features-only eager model or a backbone inference form (it keeps its norms)."""
    return bool(getattr(model, "features_only", False)) or (
        getattr(model, "feature_norms", None) is not None
    )


def output_names(model: Any) -> list[str]:
    """What ``model``'s outputs are called in every exported artifact."""
    return feature_names() if is_backbone(model) else [LOGITS]


def name_outputs(out: T | Sequence[T]) -> dict[str, T]:
    """A forward's result by name: a backbone's maps (a tuple/list) or the logits."""
    if isinstance(out, (tuple, list)):
        return dict(zip(feature_names(len(out)), out, strict=True))
    return {LOGITS: out}  # type: ignore[dict-item]
