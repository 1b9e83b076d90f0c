"""Accuracy-aware int8: when a quantized artifact fails the int8 rule, return the quantized
layers that do the most damage to float, one at a time, re-checking each time.

The loop (``search``) is the same for every quantizer: quantize with a set of layers kept in
float, judge the result by the gate's rule on the gate's (held-out) images, and while it
fails rank the layers still quantized and add the worst one to the float set. It stops when
the rule holds or when ``max_float_fraction`` of the quantizable layers would be float
(then the export fails as before, saying what was tried).

Each quantizer brings its ranking from its target's package: the Q/DQ ONNX's in
``partialnet.export.targets.onnx.fallback`` (per-node damage measured per channel); a target
whose SDK has an accuracy-controlled quantizer may use that instead.

Deterministic: MinMax calibration, a fixed image subset and ties broken by node name.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from partialnet.export.gate.parity import ParityResult

log = logging.getLogger(__name__)

MAX_FLOAT_FRACTION = 0.4  # the goal keeps >= 60% of the convs quantized


@dataclass
class FallbackOutcome:
    """What the search did: the float layers it chose and the verdict before and after."""

    float_layers: list[str]
    before: ParityResult
    after: ParityResult
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    quantizable: int = 0

    @property
    def passed(self) -> bool:
        return self.after.passed

    def record(self) -> dict[str, Any]:
        """The artifact's ``details.fallback`` entry."""
        return {
            "float_layers": list(self.float_layers),
            "quantizable_layers": self.quantizable,
            "quantized_fraction": round(1 - len(self.float_layers) / max(self.quantizable, 1), 4),
            "before": _verdict(self.before),
            "after": _verdict(self.after),
            "search_seconds": round(self.seconds, 2),
            "steps": self.steps,
        }

    def describe(self) -> str:
        return (
            f"returned {len(self.float_layers)} of {self.quantizable} layers to float "
            f"({', '.join(self.float_layers) or 'none'}) in {self.seconds:.0f} s: "
            f"{_short(self.before)} -> {_short(self.after)}"
        )


def _verdict(r: ParityResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "passed": r.passed,
        "top1_agreement": r.top1_agreement,
        "min_image_cosine": r.min_image_cosine,
        "failed_rules": list(r.failed_rules),
    }
    if r.accuracy is not None:
        out["top1"] = r.accuracy["top1"]
        out["reference_top1"] = r.accuracy["reference_top1"]
    return out


def _short(r: ParityResult) -> str:
    if r.accuracy is not None:
        return f"top-1 {r.accuracy['top1']:.2%}"
    return f"agreement {r.top1_agreement:.1%}, min cosine {r.min_image_cosine:.3f}"


def search(
    quantize: Callable[[list[str]], None],
    judge: Callable[[], ParityResult],
    rank: Callable[[list[str]], list[tuple[str, float]]],
    quantizable: Sequence[str],
    *,
    max_float_fraction: float = MAX_FLOAT_FRACTION,
) -> FallbackOutcome:
    """Greedy: quantize, judge, and while failing move the worst-ranked layer to float.

    ``quantize(float_layers)`` writes the artifact with those layers kept in float;
    ``judge()`` checks what was written; ``rank(float_layers)`` returns (layer, damage) for
    the layers still quantized, worst first. The artifact last written is the outcome's.
    """
    started = time.perf_counter()
    limit = math.floor(max_float_fraction * len(quantizable))
    float_layers: list[str] = []
    quantize(float_layers)
    before = result = judge()
    steps: list[dict[str, Any]] = []
    while not result.passed and len(float_layers) < limit:
        ranking = [(n, d) for n, d in rank(float_layers) if n not in float_layers]
        if not ranking:
            break
        worst, damage = ranking[0]
        float_layers.append(worst)
        log.info("int8 fallback: %s back to float (damage %.3g)", worst, damage)
        quantize(float_layers)
        result = judge()
        steps.append({"float": worst, "damage": round(float(damage), 5), "after": _short(result)})
    return FallbackOutcome(
        float_layers, before, result, time.perf_counter() - started, steps, len(quantizable)
    )


def with_outcome(
    ctx: Any, facts: dict[str, Any], outcome: FallbackOutcome, name: str
) -> dict[str, Any]:
    """The quantizer's facts with what the fallback did (``float_layers``, ``fallback``)."""
    if outcome.before.passed:
        return {**facts, "float_layers": [], "fallback": {"needed": False}}
    verdict = "holds" if outcome.passed else "still fails"
    log.info("      int8 fallback (%s): %s; the rule %s", name, outcome.describe(), verdict)
    return {
        **facts,
        "float_layers": list(outcome.float_layers),
        "fallback": {"needed": True, **outcome.record()},
    }
