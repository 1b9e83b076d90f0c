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

This module orchestrates; the candidates and their planning are ``auto.candidates``, the
timing ``auto.timing``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError, first_line
from partialnet.export.auto.candidates import (
    Candidate,
    Plan,
    execution_candidate,
    plan_candidates,
    primary_record,
    top1_of,
    within_budget,
)
from partialnet.export.auto.timing import time_candidates
from partialnet.export.errors import ExportFailure
from partialnet.export.options import (
    DEFAULT_CALIBRATION_IMAGES,
    Precision,
    Target,
    check_max_drop,
    parse_targets,
)
from partialnet.export.output.commit import Staged, commit, scratch_dir
from partialnet.export.output.existing import Earlier, earlier_export
from partialnet.export.output.files import describe_os_error, prepare_output_dir
from partialnet.export.output.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.targets import TARGETS

log = logging.getLogger(__name__)

AUTO_TARGETS = tuple(spec.target for spec in TARGETS if spec.auto)


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
            execution_candidate(target, candidates[0], execution, max_drop, source, variant, data)
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
        record = primary_record(manifest, target) if manifest is not None else None
        if record is None:
            mine = [r for r in rejected if r.target == target.value]
            top1 = top1_of(mine[0].parity) if mine else None
            note = "failed its gate" if mine else "not built"
            found[target] = Candidate(precision.value, False, top1, note=note)
            continue
        passed = record.status == "ok" and within_budget(record.parity, max_drop)
        found[target] = Candidate(
            precision.value,
            passed,
            top1_of(record.parity),
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

    names = ("partialnet.export.api", "partialnet.export.output.commit")
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addFilter(outside)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(outside)


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
