"""``--precision auto``: per target, the fastest artifact that keeps accuracy on this CPU.

Candidates are what the target's runtime can run faster on this CPU: fp32 always; an fp16
artifact only where the runtime computes fp16 natively here (``RuntimeSpec.native_precisions``;
without fp16 arithmetic a runtime runs an fp16 artifact in fp32 behind casts, or in the bf16
the next candidate covers: no faster); the fp32 artifact executed at a reduced precision the
runtime computes natively here and its runner can be asked for (bf16 on AVX512_BF16/AMX
CPUs), judged by the fp16/bf16 rule against the fp32 artifact's outputs; int8 with the
accuracy fallback (only with calibration images). Skipped candidates are listed in the
record with the reason. With labels (``--eval-data``) a candidate must also keep top-1 within
``max_drop`` points of the eager model's.

Each artifact candidate is exported in a scratch directory inside the output directory, by
the ordinary ``export()`` and so through its gate, one precision for all targets that want
it (they share the ONNX, the images and the eager reference), and only what the target's
own runtime runs (int8 ONNX without the Q/DQ graphs other targets build from).

Every candidate that passed is then timed alone, one after another (no torch, no other
runtime running), at batch 1 with the runtime's default threading: the median of
``TIMED_RUNS`` runs after a warm-up, best of ``ROUNDS`` rounds that alternate the candidates
(on a shared machine the load drifts between candidates timed back to back); each
candidate's runner is opened once for all rounds. The fastest is placed with a
``selection`` record; the others are discarded with the scratch directory. Nothing is placed
before its candidate passed.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError, first_line
from partialnet.export.commit import Staged, commit, scratch_dir
from partialnet.export.errors import ExportFailure
from partialnet.export.existing import Earlier, earlier_export
from partialnet.export.files import describe_os_error, prepare_output_dir
from partialnet.export.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.options import (
    DEFAULT_CALIBRATION_IMAGES,
    Precision,
    Target,
    check_max_drop,
    parse_targets,
)
from partialnet.export.targets import TARGETS, spec_of
from partialnet.runtimes.registry import runtime_spec

log = logging.getLogger(__name__)

AUTO_TARGETS = tuple(spec.target for spec in TARGETS if spec.auto)
WARMUP_RUNS = 10
TIMED_RUNS = 50
REDUCED = ("fp16", "bf16")  # reduced float precisions a runtime may compute natively
ROUNDS = 3  # best median of 3 alternated rounds: a shared machine's load drifts meanwhile


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


def check_auto_options(
    targets: str | list[str],
    max_drop: float | None,
    eval_data: Any,
    calibration_data: Any,
) -> tuple[Target, ...]:
    """Refuse what auto cannot do, before anything is written (exit 2)."""
    if max_drop is None:
        raise UsageError(
            "--precision auto needs a budget: add --max-drop P (top-1 points the artifact may "
            "lose, e.g. --max-drop 1.0)"
        )
    check_max_drop(max_drop)
    if eval_data is None and calibration_data is None:
        raise UsageError(
            "--precision auto needs images to judge candidates on: add --eval-data DIR "
            "(labelled, judges top-1) and/or --calibration-data DIR (also enables int8)"
        )
    chosen = parse_targets(targets)
    others = [t.value for t in chosen if t not in AUTO_TARGETS]
    if others:
        raise UsageError(
            f"--precision auto times candidates on this machine, which it cannot do for "
            f"{', '.join(others)}: use --target {_names(AUTO_TARGETS)}, or a fixed --precision for "
            f"{', '.join(others)}"
        )
    return chosen


def export_auto(
    export: Callable[..., Manifest],
    model_or_checkpoint: Any,
    *,
    targets: str | list[str],
    max_drop: float | None,
    eval_data: Any,
    calibration_data: Any,
    output_dir: str | Path | None,
    variant: str | None,
    replace: bool = False,
    **kwargs: Any,
) -> Manifest:
    """Export every candidate per target with ``export`` (the ordinary API) into scratch,
    time those that passed, and place the fastest per target in one commit step; returns
    the output directory's manifest."""
    from partialnet.export.source import resolve_source

    chosen_targets = check_auto_options(targets, max_drop, eval_data, calibration_data)
    assert max_drop is not None
    source = resolve_source(model_or_checkpoint, variant, features=kwargs.get("features", False))
    out_dir = prepare_output_dir(Path(output_dir or Path("exports") / source.variant))
    # Another model's export is refused (or, with replace, removed) before anything is built.
    earlier = earlier_export(out_dir, _identity_manifest(source, kwargs), replace)
    plans = {t: plan_candidates(t, calibration_data is not None) for t in chosen_targets}
    precisions = [p for p in Precision if any(p in plan.artifacts for plan in plans.values())]
    started = time.perf_counter()
    try:
        with scratch_dir(out_dir) as scratch:
            # One export per precision for the targets that want it: they share the ONNX,
            # the images and the eager reference, as a fixed-precision export does.
            per_target: dict[Target, list[Candidate]] = {t: [] for t in chosen_targets}
            for precision in precisions:
                wanted = tuple(t for t in chosen_targets if precision in plans[t].artifacts)
                log.info("auto: candidate %s (%s)", precision.value, _names(wanted))
                found = _candidates(
                    export,
                    model_or_checkpoint,
                    wanted,
                    precision,
                    Path(scratch) / precision.value,
                    max_drop=max_drop,
                    eval_data=eval_data,
                    calibration_data=calibration_data,
                    variant=variant,
                    **kwargs,
                )
                for target in wanted:
                    per_target[target].append(found[target])
            chosen: list[tuple[Candidate, list[Candidate]]] = []
            failed: list[str] = []
            for target in chosen_targets:
                best, candidates, table = _select(
                    target,
                    plans[target],
                    per_target[target],
                    max_drop,
                    model_or_checkpoint,
                    variant,
                    kwargs,
                    eval_data=eval_data,
                    calibration_data=calibration_data,
                )
                if best is None:
                    failed.append(
                        f"--precision auto: no {target.value} candidate kept accuracy within "
                        f"{max_drop} points ({table}); nothing was placed for it"
                    )
                else:
                    chosen.append((best, candidates))
            manifest = (
                _commit_chosen(chosen, max_drop, out_dir, Path(scratch), earlier)
                if chosen
                else load_manifest(out_dir)
            )
    except OSError as exc:  # the scratch directory itself (creation or clean-up)
        raise ExportFailure(describe_os_error(exc, "writing scratch files", out_dir)) from exc
    log.info("auto: done in %.0f s", time.perf_counter() - started)
    if failed:  # what passed for the other targets is placed, as a fixed-precision export does
        raise ExportFailure("; ".join(failed))
    assert manifest is not None
    return manifest


def _names(targets: tuple[Target, ...]) -> str:
    return ", ".join(t.value for t in targets)


def _identity_manifest(source: Any, kwargs: dict[str, Any]) -> Manifest:
    """A manifest with only what ``Manifest.identity`` compares (the model, size, features)."""
    from partialnet.export.options import parse_imgsz

    size = parse_imgsz(kwargs.get("imgsz")) or source.eager.cfg.meta.input_size
    return Manifest(
        source.variant,
        source.checkpoint,
        {},
        list(size),
        features=bool(kwargs.get("features", False)),
    )


def _select(
    target: Target,
    plan: Plan,
    candidates: list[Candidate],
    max_drop: float,
    source: Any,
    variant: str | None,
    kwargs: dict[str, Any],
    *,
    eval_data: Any,
    calibration_data: Any,
) -> tuple[Candidate | None, list[Candidate], str]:
    """Time the candidates of ``target`` that passed; the fastest (None when none passed),
    all of them (the skipped ones last), and the table for messages."""
    data = {
        "eval_data": eval_data,
        "calibration_data": calibration_data,
        "calibration_images": kwargs.get("calibration_images", DEFAULT_CALIBRATION_IMAGES),
    }
    for execution in plan.executions:
        candidates.append(
            _execution_candidate(target, candidates[0], execution, max_drop, source, variant, data)
        )
    timed = [c for c in candidates if c.passed]
    for c, ms in zip(timed, time_candidates(target, timed), strict=True):
        c.latency_ms = ms
    candidates += [Candidate(p, False, skipped=why) for p, why in plan.skipped.items()]
    table = ", ".join(
        f"{c.precision} {f'{c.latency_ms:.3f} ms' if c.latency_ms else '-'}"
        f"{' (skipped)' if c.skipped else '' if c.passed else ' (failed)'}"
        for c in candidates
    )
    log.info("auto: %s: %s", target.value, table)
    if not timed:
        return None, candidates, table
    best = min(timed, key=lambda c: (c.latency_ms or float("inf"), c.precision))
    return best, candidates, table


def _candidates(
    export: Callable[..., Manifest],
    source: Any,
    targets: tuple[Target, ...],
    precision: Precision,
    sub: Path,
    *,
    max_drop: float,
    **kwargs: Any,
) -> dict[Target, Candidate]:
    """Export ``precision`` for every target into ``sub``; one candidate per target."""
    from partialnet.export.errors import ParityFailure

    rejected: list[ArtifactRecord] = []
    try:
        with _quiet_scratch_placement(sub):
            manifest = export(
                source,
                targets=",".join(t.value for t in targets),
                precision=precision.value,
                output_dir=sub,
                max_drop=max_drop,
                own_runtime_only=True,  # timed on the target's own runtime only
                **kwargs,
            )
    except ParityFailure as exc:  # what passed was placed; the rest is in exc.rejected
        manifest = exc.manifest if isinstance(exc.manifest, Manifest) else None
        rejected = list(exc.rejected)
    except ExportFailure as exc:  # what passed before it was placed
        manifest = load_manifest(sub) if sub.exists() else None
        log.info("  auto: %s: %s", precision.value, first_line(str(exc))[:200])
    found = {}
    for target in targets:
        record = _primary(manifest, target) if manifest is not None else None
        if record is None:
            mine = [r for r in rejected if r.target == target.value]
            top1 = _top1(mine[0].parity) if mine else None
            note = "failed its gate" if mine else "not built"
            found[target] = Candidate(precision.value, False, top1, note=note)
            continue
        passed = record.status == "ok" and _within(record.parity, max_drop)
        found[target] = Candidate(
            precision.value,
            passed,
            _top1(record.parity),
            record=record,
            directory=sub,
        )
    return found


@contextlib.contextmanager
def _quiet_scratch_placement(sub: Path) -> Iterator[None]:
    """A candidate's export "places" its artifacts in auto's scratch: those lines would read
    as if they were in the output directory, so they are dropped (the rest is progress)."""

    def outside(record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and str(sub) in record.getMessage())

    loggers = [logging.getLogger(n) for n in ("partialnet.export.api", "partialnet.export.commit")]
    for logger in loggers:
        logger.addFilter(outside)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(outside)


def _primary(manifest: Manifest, target: Target) -> ArtifactRecord | None:
    """The record auto may place for ``target``: the one its runtime runs."""
    records = [a for a in manifest.artifacts if a.target == target.value]
    mine = [a for a in records if spec_of(target).for_runtime(a.details)]
    return mine[0] if mine else None


def _top1(parity: dict[str, Any]) -> float | None:
    acc = parity.get("accuracy")
    return float(acc["top1"]) if acc else None


def _within(parity: dict[str, Any], max_drop: float) -> bool:
    acc = parity.get("accuracy")
    if not acc:
        return True  # no labels: the precision's own (agreement) rule decided
    return float(acc["reference_top1"]) - float(acc["top1"]) <= max_drop / 100 + 1e-12


def _execution_candidate(
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
        calibration_images=data.get("calibration_images", 300),
    )
    return inputs.gate


def time_candidates(target: Target, candidates: list[Candidate]) -> list[float]:
    """Each candidate's best median ms at batch 1 over ``ROUNDS`` alternated rounds, with the
    runtime's default threading; one runner runs at a time, each opened once."""
    from partialnet.runtimes import open_runner

    spec = spec_of(target)
    best = [float("inf")] * len(candidates)
    with contextlib.ExitStack() as stack:
        runners = []
        for c in candidates:
            assert c.record is not None and c.directory is not None
            # What the record says it runs as (the bf16 candidate: its fp32 IR in bf16).
            options = spec.artifact_runner_options(c.record.precision, c.record.details)
            path = c.directory / c.record.path
            runners.append(stack.enter_context(open_runner(spec.runtime, path, **options)))
        for _ in range(ROUNDS):  # rounds alternate the candidates: the load drifts meanwhile
            for i, (c, runner) in enumerate(zip(candidates, runners, strict=True)):
                ms = _median_ms(runner, c.record.input_shape)  # type: ignore[union-attr]
                best[i] = min(best[i], ms)
    return best


def _median_ms(runner: Any, input_shape: list[int]) -> float:
    """Median ms of ``TIMED_RUNS`` runs at batch 1 after ``WARMUP_RUNS`` (the warm-up also
    lets the previously timed runner's pool go idle)."""
    x = np.random.default_rng(0).standard_normal((1, *input_shape[1:]), dtype=np.float32)
    for _ in range(WARMUP_RUNS):
        runner.infer(x)
    times = []
    for _ in range(TIMED_RUNS):
        t = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _commit_chosen(
    chosen: list[tuple[Candidate, list[Candidate]]],
    max_drop: float,
    out_dir: Path,
    scratch: Path,
    earlier: Earlier,
) -> Manifest:
    """Place every target's chosen candidate, the gate reference it names and the manifest
    (the earlier records kept, those of the same files replaced) in one commit step."""
    first = chosen[0][0]
    assert first.directory is not None
    sub = load_manifest(first.directory)
    assert sub is not None
    manifest = Manifest(
        sub.variant, sub.checkpoint, sub.versions, sub.input_size, features=sub.features
    )
    manifest.data = sub.data
    for record in earlier.keep:
        manifest.add(record)
    items: dict[str, Staged] = {}
    for best, candidates in chosen:
        assert best.record is not None and best.directory is not None
        record = best.record
        record.selection = {
            "max_drop": max_drop,
            "candidates": [c.row() for c in candidates],
            "chosen": best.precision,
        }
        items[record.path] = Staged(best.directory / record.path, record.path)
        ref = record.reference
        # Named by content: an earlier file of that name holds the same arrays; it is kept.
        if ref and not (out_dir / str(ref["path"])).is_file():
            items[str(ref["path"])] = Staged(best.directory / str(ref["path"]), str(ref["path"]))
        # A file holds one artifact: an earlier record of the same name (e.g. the fp32 IR
        # now chosen for bf16 execution) goes.
        manifest.artifacts = [a for a in manifest.artifacts if a.path != record.path]
        manifest.add(record)
    listed = {str(r.reference["path"]) for r in manifest.artifacts if r.reference}
    orphans = [p for name, p in earlier.references.items() if name not in listed]
    commit(out_dir, scratch, list(items.values()), manifest, [*earlier.remove, *orphans])
    for best, _ in chosen:
        assert best.record is not None
        log.info("auto: %s: placed %s (%s)", best.record.target, best.precision, best.record.path)
    return manifest
