"""How the ONNX target is built in scratch, and how its artifacts are opened to verify them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partialnet.export.options import Precision, Target
from partialnet.export.targets.base import BuiltArtifact, QdqRecipe, TargetContext, opener
from partialnet.runtimes.base import Runtime

# ONNX Runtime's own int8 graph: uint8 asymmetric activations, int32 biases, 7-bit weights
# (why, with the measurements: partialnet.export.targets.onnx.int8).
QDQ = QdqRecipe(
    flavour="onnxruntime",
    serves="ONNX Runtime",
    symmetric=False,
    int32_biases=True,
    reduce_range=True,
)


def _recipes() -> list[QdqRecipe]:
    """Every registered Q/DQ recipe, this target's own first (export order)."""
    from partialnet.export.targets import qdq_recipes

    return qdq_recipes()


def for_runtime(details: Mapping[str, Any]) -> bool:
    """int8 writes a Q/DQ graph per recipe; ONNX Runtime runs (and serves) its own only."""
    return details.get("flavour", QDQ.flavour) == QDQ.flavour


def also_writes(stem: str, precision: Precision) -> tuple[str, ...]:
    """int8 places the other consumers' graphs beside ONNX Runtime's."""
    if precision is not Precision.INT8:
        return ()
    return tuple(f"{stem}-{r.flavour}.onnx" for r in _recipes() if r.flavour != QDQ.flavour)


def runner_options(precision: Precision) -> dict[str, Any]:
    # Spinning off: the gate and the parity cells run right after torch's reference, on the
    # same cores, and spinning threads would steal from it.
    return {"allow_spinning": False}


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    runner = opener(Runtime.ONNXRUNTIME, **runner_options(ctx.options.precision))
    if ctx.int8:
        # One graph cannot serve every consumer: ONNX Runtime is fastest with uint8
        # activations and int32 biases, which others refuse (each recipe's module says why).
        # own_runtime_only (--precision auto's candidates): ONNX Runtime's own graph only.
        recipes = [
            r for r in _recipes() if r.flavour == QDQ.flavour or not ctx.options.own_runtime_only
        ]
        built = []
        for recipe in recipes:
            path, facts = ctx.qdq_onnx(recipe.flavour)
            facts = {**facts, "serves": recipe.serves}
            built.append(BuiltArtifact(Target.ONNX, path, path.name, facts, None, runner))
        return built
    path, facts = ctx.onnx()
    return [BuiltArtifact(Target.ONNX, path, ctx.artifact_name(Target.ONNX), facts, None, runner)]
