"""``--precision auto``: per target, the fastest artifact that keeps accuracy on this CPU.

For each target every candidate its runtime can run is exported in a scratch directory
inside the output directory, by the ordinary ``export()`` and so through its gate: fp32,
fp16, int8 (with the accuracy fallback; only with calibration images), and for OpenVINO the
fp32 IR executed in bf16 where this CPU has bf16 arithmetic (judged by the fp16/bf16 rule
against the fp32 IR's outputs, which passed the fp32 rule). With labels (``--eval-data``) a
candidate must also keep top-1 within ``max_drop`` points of the eager model's.

Every candidate that passed is then timed alone, one after another (no torch, no other
runtime running), at batch 1 with the runtime's default threading: the median of
``TIMED_RUNS`` runs after a warm-up, best of ``ROUNDS`` rounds that alternate the candidates
(on a shared machine the load drifts between candidates timed back to back). The fastest
is placed with a ``selection`` record; the others are discarded with the scratch directory.
Nothing is placed before its candidate passed.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.files import place, prepare_output_dir
from partialnet.export.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.options import Precision, Target, check_max_drop, parse_targets

log = logging.getLogger(__name__)

AUTO_TARGETS = (Target.ONNX, Target.OPENVINO)
WARMUP_RUNS = 10
TIMED_RUNS = 50
ROUNDS = 3  # best median of 3 alternated rounds: a shared machine's load drifts meanwhile
RUNTIME = {Target.ONNX: "onnxruntime", Target.OPENVINO: "openvino"}


@dataclass
class Candidate:
    precision: str  # fp32, fp16, bf16 (execution of the fp32 IR), int8
    passed: bool
    top1: float | None = None
    latency_ms: float | None = None
    record: ArtifactRecord | None = None
    directory: Path | None = None
    note: str = ""

    def row(self) -> dict[str, Any]:
        out = {
            "precision": self.precision,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
            "top1": self.top1,
            "passed": self.passed,
        }
        if self.note:
            out["note"] = self.note
        return out


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
            f"{', '.join(others)}: use --target onnx,openvino, or a fixed --precision for "
            f"{', '.join(others)}"
        )
    return chosen


def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 arithmetic here (AVX512_BF16 or AMX)."""
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO or no CPU plugin: no bf16 candidate
        return False
    return "BF16" in caps


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
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Manifest:
    """Export every candidate per target with ``export`` (the ordinary API), time those that
    passed, place the fastest; returns the output directory's manifest."""
    say = progress or (lambda _msg: None)
    chosen_targets = check_auto_options(targets, max_drop, eval_data, calibration_data)
    assert max_drop is not None
    if output_dir is None:
        from partialnet.export.source import resolve_source

        output_dir = Path("exports") / resolve_source(model_or_checkpoint, variant).variant
    out_dir = prepare_output_dir(Path(output_dir))
    precisions = [Precision.FP32, Precision.FP16]
    if calibration_data is not None:
        precisions.append(Precision.INT8)
    else:
        say("auto: no --calibration-data, so no int8 candidate")
    started = time.perf_counter()
    manifest: Manifest | None = None
    with tempfile.TemporaryDirectory(prefix=".partialnet-auto-", dir=out_dir) as scratch:
        # One export per precision for all targets: they share the ONNX, the images and
        # the eager reference, as a fixed-precision export does.
        per_target: dict[Target, list[Candidate]] = {t: [] for t in chosen_targets}
        for precision in precisions:
            say(f"auto: candidate {precision.value}")
            found = _candidates(
                export,
                model_or_checkpoint,
                chosen_targets,
                precision,
                Path(scratch) / precision.value,
                max_drop=max_drop,
                eval_data=eval_data,
                calibration_data=calibration_data,
                variant=variant,
                say=say,
                **kwargs,
            )
            for target in chosen_targets:
                per_target[target].append(found[target])
        for target in chosen_targets:
            candidates = per_target[target]
            if target is Target.OPENVINO and openvino_has_bf16():
                fp32 = candidates[0]
                data = {
                    "eval_data": eval_data,
                    "calibration_data": calibration_data,
                    "calibration_images": kwargs.get("calibration_images", 300),
                }
                candidates.append(
                    _bf16_candidate(fp32, max_drop, model_or_checkpoint, variant, data)
                )
            timed = [c for c in candidates if c.passed]
            for _ in range(ROUNDS):  # one runner at a time; rounds alternate the candidates
                for c in timed:
                    ms = time_candidate(target, c)
                    c.latency_ms = ms if c.latency_ms is None else min(c.latency_ms, ms)
            passed = [c for c in candidates if c.passed]
            table = ", ".join(
                f"{c.precision} {f'{c.latency_ms:.3f} ms' if c.latency_ms else '-'}"
                f"{'' if c.passed else ' (failed)'}"
                for c in candidates
            )
            say(f"auto: {target.value}: {table}")
            if not passed:
                raise ExportFailure(
                    f"--precision auto: no {target.value} candidate kept accuracy within "
                    f"{max_drop} points ({table}); nothing was placed for it"
                )
            best = min(passed, key=lambda c: (c.latency_ms or float("inf"), c.precision))
            manifest = _place(best, candidates, max_drop, out_dir, manifest)
            say(f"auto: {target.value}: placed {best.precision} ({best.record.path})")
    say(f"auto: done in {time.perf_counter() - started:.0f} s")
    assert manifest is not None
    return manifest


def _candidates(
    export: Callable[..., Manifest],
    source: Any,
    targets: tuple[Target, ...],
    precision: Precision,
    sub: Path,
    *,
    max_drop: float,
    say: Callable[[str], None],
    **kwargs: Any,
) -> dict[Target, Candidate]:
    """Export ``precision`` for every target into ``sub``; one candidate per target."""
    from partialnet.export.errors import ParityFailure

    rejected: list[ArtifactRecord] = []
    try:
        manifest = export(
            source,
            targets=",".join(t.value for t in targets),
            precision=precision.value,
            output_dir=sub,
            max_drop=max_drop,
            progress=lambda msg: say(f"  {msg}"),
            **kwargs,
        )
    except ParityFailure as exc:  # what passed was placed; the rest is in exc.rejected
        manifest = exc.manifest if isinstance(exc.manifest, Manifest) else None
        rejected = list(exc.rejected)
    except ExportFailure as exc:  # what passed before it was placed
        manifest = load_manifest(sub) if sub.exists() else None
        say(f"  auto: {precision.value}: {str(exc)[:200]}")
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
            precision.value, passed, _top1(record.parity), record=record, directory=sub
        )
    return found


def _primary(manifest: Manifest, target: Target) -> ArtifactRecord | None:
    """The record auto may place for ``target`` (int8 ONNX: the ONNX Runtime flavour)."""
    records = [a for a in manifest.artifacts if a.target == target.value]
    mine = [a for a in records if a.details.get("flavour", "onnxruntime") == "onnxruntime"]
    return mine[0] if mine else None


def _top1(parity: dict[str, Any]) -> float | None:
    acc = parity.get("accuracy")
    return float(acc["top1"]) if acc else None


def _within(parity: dict[str, Any], max_drop: float) -> bool:
    acc = parity.get("accuracy")
    if not acc:
        return True  # no labels: the precision's own (agreement) rule decided
    return float(acc["reference_top1"]) - float(acc["top1"]) <= max_drop / 100 + 1e-12


def _bf16_candidate(
    fp32: Candidate, max_drop: float, source: Any, variant: str | None, data: dict[str, Any]
) -> Candidate:
    """The fp32 IR run in bf16, judged by the fp16/bf16 rule against its own f32 outputs."""
    from partialnet.export.gate.parity import compare
    from partialnet.runtimes import open_runner

    if not fp32.passed or fp32.record is None or fp32.directory is None:
        return Candidate("bf16", False, note="the fp32 IR did not pass")
    path = fp32.directory / fp32.record.path
    images, labels, dataset = _gate_images(fp32, source, variant, data)
    outs = {}
    for precision in ("fp32", "bf16"):
        with open_runner("openvino", path, precision=precision, threads=None) as runner:
            outs[precision] = np.concatenate(
                [runner.infer(images[i : i + 1]) for i in range(len(images))]
            )
    result = compare(outs["fp32"], outs["bf16"], Precision.FP16, labels=labels, dataset=dataset)
    top1 = float(result.accuracy["top1"]) if result.accuracy else None
    ok = result.passed
    if result.accuracy and fp32.record.parity.get("accuracy"):
        ref = float(fp32.record.parity["accuracy"]["reference_top1"])
        ok = ok and ref - float(result.accuracy["top1"]) <= max_drop / 100 + 1e-12
    record = ArtifactRecord(**{**fp32.record.__dict__})
    record.precision = "bf16"
    record.parity = {**result.to_dict(), "reference": "the fp32 IR executed in f32"}
    record.accuracy = result.accuracy
    record.details = {**record.details, "execution_precision": "bf16"}
    return Candidate("bf16", ok, top1, record=record, directory=fp32.directory)


def _gate_images(
    fp32: Candidate, source: Any, variant: str | None, data: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """The images the fp32 candidate's gate ran on (labels with --eval-data)."""
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
    return inputs.gate.images, inputs.gate.labels, inputs.gate.dataset


def time_candidate(target: Target, c: Candidate) -> float:
    """Median ms at batch 1, the runtime's default threading, this runtime alone."""
    from partialnet.runtimes import open_runner

    assert c.record is not None and c.directory is not None
    path = c.directory / c.record.path
    options: dict[str, Any] = {}
    if target is Target.OPENVINO:
        options["precision"] = {"int8": "fp32", "fp16": "fp16"}.get(c.precision, c.precision)
    x = np.random.default_rng(0).standard_normal((1, *c.record.input_shape[1:]), dtype=np.float32)
    with open_runner(RUNTIME[target], path, **options) as runner:
        for _ in range(WARMUP_RUNS):
            runner.infer(x)
        times = []
        for _ in range(TIMED_RUNS):
            t = time.perf_counter()
            runner.infer(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _place(
    best: Candidate,
    candidates: list[Candidate],
    max_drop: float,
    out_dir: Path,
    manifest: Manifest | None,
) -> Manifest:
    assert best.record is not None and best.directory is not None
    sub = load_manifest(best.directory)
    assert sub is not None
    if manifest is None:
        manifest = Manifest(sub.variant, sub.checkpoint, sub.versions, sub.input_size)
        earlier = load_manifest(out_dir)
        if earlier and (earlier.variant, earlier.checkpoint, earlier.input_size) == (
            sub.variant,
            sub.checkpoint,
            sub.input_size,
        ):
            for record in earlier.artifacts:
                if (out_dir / record.path).exists():
                    manifest.add(record)
        manifest.data = sub.data
    record = best.record
    record.selection = {
        "max_drop": max_drop,
        "candidates": [c.row() for c in candidates],
        "chosen": best.precision,
    }
    try:
        place(best.directory / record.path, out_dir / record.path)
        manifest.add(record)
        manifest.write(out_dir)
    except OSError as exc:
        from partialnet.export.files import describe_os_error

        raise ExportFailure(describe_os_error(exc, f"placing {record.path}", out_dir)) from exc
    return manifest
