"""One artifact on this device: the gate repeated from its reference, then its latency.

The parity figures come from the export gate's own code (``infer_in_batches`` and
``judge`` in ``partialnet.export.gate.parity``), on the reference's inputs in the gate's
batches: on the export machine they equal the manifest's record. Timing reuses the bench's
loop (``measure_runner``): batch 1 (p50/p90/p99) and the export's batch range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partialnet.bench.check.plan import Planned
from partialnet.bench.perf.measure import ProgressLine, measure_runner
from partialnet.export.gate.parity import (
    INT8_MAX_TOP1_DROP,
    ParityResult,
    infer_in_batches,
    judge,
)
from partialnet.export.gate.reference import Reference
from partialnet.export.options import Precision
from partialnet.export.targets import runtime_of, spec_of

# The figures that must equal the gate's on the export machine (the rest is description).
PARITY_FIGURES = (
    "max_abs",
    "max_rel",
    "cosine",
    "min_image_cosine",
    "top1_agreement",
    "top1_agreement_lenient",
    "images",
    "passed",
)


@dataclass(frozen=True)
class Timing:
    warmup: int
    iterations: int | None
    duration: float | None


# Execution precisions that are no artifact precision, and the rule that judges them: auto's
# bf16 candidate (the fp32 IR executed in bf16) passed the fp16/bf16 rule against the fp32
# IR, which itself passed the fp32 rule against the eager outputs the reference holds.
EXECUTION_RULES = {"bf16": Precision.FP16.value}


def runner_options(entry: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """The runner as the export gate opened it (what its target's spec says the recorded
    artifact needs: an execution precision, an SDK flavour), with this device's threads."""
    options: dict[str, Any] = {"threads": threads} if threads else {}
    spec = spec_of(entry["target"])
    return options | spec.artifact_runner_options(
        str(entry.get("precision")), entry.get("details") or {}
    )


def timing_batches(entry: dict[str, Any], batch_range: tuple[int, int]) -> list[int]:
    """Batch 1 where the artifact takes it, then the export's batch range (min, opt, max)."""
    dynamic = entry.get("dynamic_batch")
    shape = entry.get("input_shape") or [1]
    wanted = [1, *(dynamic or [int(shape[0])])]
    lo, hi = batch_range
    return sorted({b for b in wanted if lo <= b <= hi}) or [lo]


def gate_verdict(entry: dict[str, Any]) -> str:
    """What the export machine said: pass, fail, or unverified (it could not run it)."""
    parity = entry.get("parity") or {}
    if "passed" not in parity:
        return "unverified"
    return "pass" if parity["passed"] else "fail"


def same_as_gate(result: ParityResult, entry: dict[str, Any]) -> bool | None:
    """Whether every figure equals the manifest's (None: the gate did not run it)."""
    gate = entry.get("parity") or {}
    if "passed" not in gate:
        return None
    mine = result.to_dict()
    return all(mine.get(k) == gate.get(k) for k in PARITY_FIGURES)


def check_artifact(
    item: Planned,
    reference: Reference,
    open_runner: Any,
    threads: int | None,
    timing: Timing,
    progress: ProgressLine | None = None,
) -> dict[str, Any]:
    """Open the artifact's runner, repeat the gate, time it; the row of the report."""
    entry = item.entry
    row = base_row(item)
    runtime = row["runtime"]
    with open_runner(runtime, item.path, **runner_options(entry, threads)) as runner:
        info = runner.info()
        infer = runner.infer_all if reference.features else runner.infer
        outs = infer_in_batches(infer, reference.gate.images, reference.batch, info.batch_range)
        # The export's own int8 budget (--max-drop), recorded with its rule.
        limits = reference.meta.get("rule", {}).get("limits", {})
        budget = float(limits.get("max_top1_drop", INT8_MAX_TOP1_DROP))
        precision = Precision(EXECUTION_RULES.get(entry["precision"], entry["precision"]))
        result = judge(reference.expected(), outs, precision, reference.gate, budget)
        simulated = bool(info.extra.get("simulated"))
        row.update(
            status="pass" if result.passed else "fail",
            parity=result.to_dict() | ({"status": "simulated"} if simulated else {}),
            same_as_gate=same_as_gate(result, entry),
            runner=info.to_dict(),
            computed_in=info.precision,
        )
        if "default_precision" in info.extra:  # a runtime that picks a precision by device
            row["execution_precision"] = execution_precision(info.precision, info.extra)
        if simulated:  # a simulator's speed says nothing about the device it stands for
            by = info.extra.get("interpreter", info.provider)
            row["timing_skipped"] = f"simulated {info.runtime} ({by}): no device latency"
            return row
        cells = []
        chw = tuple(entry["input_shape"][1:])
        for cell in measure_runner(
            runner,
            timing_batches(entry, info.batch_range),
            chw,
            progress,
            f"{runtime} {item.name}",
            warmup=timing.warmup,
            iterations=timing.iterations,
            duration=timing.duration,
        ):
            if cell.measurement is None:
                cells.append({"batch": cell.batch, "skipped": cell.skipped})
                continue
            m = cell.measurement
            cells.append(
                {
                    "batch": cell.batch,
                    "latency_ms": m.stats.to_dict(),
                    "iterations": m.iterations,
                    "throughput_ips": m.throughput(cell.batch),
                    "peak_memory_mb": cell.peak_memory_mb,
                }
            )
        row["timing"] = cells
    return row


def execution_precision(checked_in: str, extra: dict[str, Any]) -> dict[str, Any]:
    """For a runtime that picks its execution precision by device when not told (its runner
    reports ``default_precision``): what this check executed the artifact in, the setting the
    runner used for it, and what a plain load executes in on this device. Such an artifact
    cannot carry its precision (the runner module says why), so on a bf16 CPU a user who
    sets nothing runs an fp32 artifact in bf16: a precision this check did not judge, and
    the report says so."""
    default = extra.get("default_precision")
    return {
        "checked_in": checked_in,
        "setting": extra.get("precision_setting"),
        "runner_hint": extra.get("precision_hint"),
        "plain_compile_default": default,
        "plain_compile_checked": None if default is None else default == checked_in,
    }


def base_row(item: Planned) -> dict[str, Any]:
    entry = item.entry
    return {
        "artifact": item.name,
        "target": entry["target"],
        "precision": entry["precision"],
        "runtime": runtime_of(entry["target"]),
        "sha256": entry.get("sha256"),
        "gate": gate_verdict(entry),
        "gate_parity": entry.get("parity"),
        "reference": (entry.get("reference") or {}).get("path"),
    }
