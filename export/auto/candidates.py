"""``--precision auto``'s candidates: which ones a target's runtime can run faster on this
CPU (``plan_candidates``), what each one is (``Candidate``), and the candidate that is no
artifact of its own: the fp32 artifact executed at a reduced precision, judged here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.export.options import DEFAULT_CALIBRATION_IMAGES, Precision, Target
from partialnet.export.output.manifest import ArtifactRecord, Manifest
from partialnet.export.targets import spec_of
from partialnet.runtimes.registry import runtime_spec

REDUCED = ("fp16", "bf16")  # reduced float precisions a runtime may compute natively


@dataclass
class Candidate:
    precision: str  # fp32, fp16, int8, or bf16 (the fp32 artifact executed in bf16)
    passed: bool
    top1: float | None = None
    latency_ms: float | None = None
    record: ArtifactRecord | None = None
    directory: Path | None = None
    note: str = ""
    skipped: str = ""  # why it is no candidate on this CPU ('' when it was tried)

    def row(self) -> dict[str, Any]:
        out = {
            "precision": self.precision,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
            "top1": self.top1,
            "passed": self.passed,
        }
        if self.note:
            out["note"] = self.note
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass(frozen=True)
class Plan:
    """One target's candidates on this CPU."""

    artifacts: tuple[Precision, ...]  # exported, each through its gate
    executions: tuple[str, ...]  # the fp32 artifact executed at these precisions
    skipped: dict[str, str]  # precision -> why it is no candidate here


def plan_candidates(target: Target, with_int8: bool) -> Plan:
    """What ``target``'s runtime can run faster than fp32 on this CPU, and what it cannot."""
    spec = spec_of(target)
    native = runtime_spec(spec.runtime).native_precisions()
    name = spec.runtime.value
    artifacts = [Precision.FP32]
    skipped: dict[str, str] = {}
    if "fp16" in native:
        artifacts.append(Precision.FP16)
    else:
        skipped["fp16"] = f"{name} has no fp16 arithmetic on this CPU: no faster than fp32"
    if with_int8:
        artifacts.append(Precision.INT8)
    else:
        skipped["int8"] = "no --calibration-data to calibrate on"
    have = {p.value for p in artifacts}
    # The reduced float precisions its runner can execute the fp32 artifact at.
    reduced = [p for p in spec.execution_precisions if p in REDUCED and p not in have]
    executions = tuple(p for p in reduced if p in native)
    for p in reduced:
        if p not in native and p not in skipped:
            skipped[p] = f"{name} has no {p} arithmetic on this CPU"
    return Plan(tuple(artifacts), executions, skipped)


def primary_record(manifest: Manifest, target: Target) -> ArtifactRecord | None:
    """The record auto may place for ``target``: the one its runtime runs."""
    records = [a for a in manifest.artifacts if a.target == target.value]
    mine = [a for a in records if spec_of(target).for_runtime(a.details)]
    return mine[0] if mine else None


def top1_of(parity: dict[str, Any]) -> float | None:
    acc = parity.get("accuracy")
    return float(acc["top1"]) if acc else None


def within_budget(parity: dict[str, Any], max_drop: float) -> bool:
    acc = parity.get("accuracy")
    if not acc:
        return True  # no labels: the precision's own (agreement) rule decided
    return float(acc["reference_top1"]) - float(acc["top1"]) <= max_drop / 100 + 1e-12


def execution_candidate(
    target: Target,
    fp32: Candidate,
    execution: str,
    max_drop: float,
    source: Any,
    variant: str | None,
    data: dict[str, Any],
) -> Candidate:
    """The fp32 artifact executed at ``execution`` (bf16), judged by the fp16/bf16 rule
    against the same artifact's fp32 outputs."""
    from partialnet.export.gate.parity import compare
    from partialnet.runtimes import open_runner

    if not fp32.passed or fp32.record is None or fp32.directory is None:
        return Candidate(execution, False, note=f"the fp32 {target.value} artifact did not pass")
    path = fp32.directory / fp32.record.path
    gate = _gate_images(fp32, source, variant, data)
    images = gate.images
    outs = {}
    for precision in ("fp32", execution):
        options = spec_of(target).artifact_runner_options(precision, {})
        with open_runner(spec_of(target).runtime, path, **options) as runner:
            outs[precision] = np.concatenate(
                [runner.infer(images[i : i + 1]) for i in range(len(images))]
            )
    result = compare(
        outs["fp32"],
        outs[execution],
        Precision.FP16,
        labels=gate.labels,
        inputs=gate.source,  # what the gate ran on, as its record says
        dataset=gate.dataset,
    )
    top1 = float(result.accuracy["top1"]) if result.accuracy else None
    ok = result.passed
    if result.accuracy and fp32.record.parity.get("accuracy"):
        ref = float(fp32.record.parity["accuracy"]["reference_top1"])
        ok = ok and ref - float(result.accuracy["top1"]) <= max_drop / 100 + 1e-12
    record = ArtifactRecord(**{**fp32.record.__dict__})
    record.precision = execution
    record.parity = {**result.to_dict(), "reference": "the fp32 artifact executed in fp32"}
    record.accuracy = result.accuracy
    record.details = {**record.details, "execution_precision": execution}
    return Candidate(execution, ok, top1, record=record, directory=fp32.directory)


def _gate_images(fp32: Candidate, source: Any, variant: str | None, data: dict[str, Any]) -> Any:
    """The images the fp32 candidate's gate ran on (``GateImages``: labels with
    --eval-data, and what they are)."""
    from partialnet.export.gate.inputs import load_inputs
    from partialnet.export.source import resolve_source

    assert fp32.record is not None
    shape = fp32.record.input_shape
    meta = resolve_source(source, variant).eager.cfg.meta
    inputs = load_inputs(
        meta,
        tuple(shape[1:]),  # type: ignore[arg-type]
        Precision.FP32,
        1,
        eval_data=data["eval_data"],
        calibration_data=data["calibration_data"],
        calibration_images=data.get("calibration_images", DEFAULT_CALIBRATION_IMAGES),
    )
    return inputs.gate
