"""Running the parity matrix's cells: one runner on one artifact over every image, judged
by the export gate's own ``compare`` against the eager fp32 reference; and every cell of one
variant."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import partialnet
from partialnet.bench.parity.export import Exporter
from partialnet.bench.parity.report import Cell, cell_text, one_line
from partialnet.bench.parity.sources import Source, weights_fingerprint
from partialnet.errors import MissingDependencyError
from partialnet.export.gate import parity as gate
from partialnet.export.options import Precision, needs_calibration
from partialnet.export.targets import spec_for_runtime, target_of
from partialnet.outputs import name_outputs
from partialnet.runtimes import RuntimeUnavailableError, open_runner
from partialnet.runtimes.registry import runtime_spec

PROG = "partialnet-bench parity"
STALE_NOTE = "sha256 differs from manifest.json (the file changed after export)"


def source_images(
    source: Source, meta: Any, precisions: list[str], args: argparse.Namespace
) -> gate.GateImages:
    """The images every cell of ``source`` runs, chosen as the export gate chooses: eval
    images, else calibration images (held out from int8 calibration when int8 is among the
    precisions, so every precision is checked on the same images), else seeded noise."""
    from partialnet.export.gate.inputs import load_inputs

    calibrated = [Precision(p) for p in precisions if needs_calibration(p)]
    wanted = calibrated[0] if calibrated else Precision.FP32
    inputs = load_inputs(
        meta,
        source.chw,
        wanted,
        args.batch,
        eval_data=args.eval_data,
        calibration_data=args.calibration_data,
        calibration_images=args.calibration_images,
        noise_count=args.images,
    )
    return inputs.gate


@torch.inference_mode()
def reference_outputs(
    eager: torch.nn.Module, inputs: np.ndarray, batch: int
) -> np.ndarray | dict[str, np.ndarray]:
    """The eager model's logits, or a backbone's maps by name (feat0..feat3)."""
    outs = []
    for i in range(0, len(inputs), batch):
        out = eager(torch.from_numpy(inputs[i : i + batch]))
        if isinstance(out, (tuple, list)):
            outs.append({k: t.float().numpy() for k, t in name_outputs(out).items()})
        else:
            outs.append(out.float().numpy())
    if isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return np.concatenate(outs)


def _torch_form(
    eager: torch.nn.Module, chw: tuple[int, int, int], precision: str
) -> torch.nn.Module:
    from partialnet.inference import to_fp16

    inference = partialnet.reparameterize(eager, chw[1:])
    if precision == "fp16":  # same arithmetic; see the module docstring
        return to_fp16(inference).to(memory_format=torch.channels_last)
    return inference


def _runner_options(
    runtime: str, precision: str, threads: int | None, ov_precision: str | None = None
) -> dict[str, Any]:
    """The options the export gate opens the runtime with (the target spec's), the torch
    runner's precision, an execution precision asked of a runtime that takes one
    (``TargetSpec.execution_precisions``) and the thread count."""
    options: dict[str, Any] = {}
    spec = spec_for_runtime(runtime)
    if spec is None:  # torch
        options["precision"] = precision
    else:
        options |= spec.runner_options(Precision(precision))
    if ov_precision is not None and spec is not None and spec.execution_precisions:
        options["precision"] = ov_precision  # else the artifact's own ("auto": the runtime's)
    if threads and runtime_spec(runtime).controls_threads:
        options["threads"] = threads
    return options


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def run_cell(
    base: Cell,
    prepare: Any,
    data: gate.GateImages,
    reference: np.ndarray | dict[str, np.ndarray],
    batch: int,
    threads: int | None,
    note: str | None = None,
    ov_precision: str | None = None,
) -> Cell:
    """Open a runner on ``prepare()``'s artifact, run every image, judge against ``reference``."""
    started, cpu = time.perf_counter(), time.process_time()
    cell = Cell(base.variant, base.runtime, base.precision, "error")
    try:
        artifact = prepare()
        cell.artifact = str(artifact) if isinstance(artifact, Path) else None
        options = _runner_options(base.runtime, base.precision, threads, ov_precision)
        with open_runner(base.runtime, artifact, **options) as runner:
            info = runner.info()
            multi = isinstance(reference, dict)
            infer = runner.infer_all if multi else runner.infer
            out = gate.infer_in_batches(infer, data.images, batch, info.batch_range)
        if multi:
            result = gate.compare_outputs(
                reference, out, Precision(base.precision), inputs=data.source
            )
        else:
            result = gate.compare(
                reference,
                out,
                Precision(base.precision),
                labels=data.labels,
                inputs=data.source,
                dataset=data.dataset,
            )
    except (RuntimeUnavailableError, MissingDependencyError) as exc:
        cell.status, cell.reason = "unavailable", f"cannot run here: {one_line(exc)}"
    except Exception as exc:  # a broken artifact or a bug: reported, and the exit code is 1
        cell.reason = f"error: {type(exc).__name__}: {one_line(exc)}"
    else:
        cell.status = "pass" if result.passed else "fail"
        cell.max_abs, cell.max_rel = _finite(result.max_abs), _finite(result.max_rel)
        cell.cosine, cell.top1_agreement = _finite(result.cosine), result.top1_agreement
        cell.top1_agreement_lenient = result.top1_agreement_lenient
        cell.min_image_cosine = _finite(result.min_image_cosine)
        cell.images, cell.runner_precision = result.images, info.precision
        cell.inputs, cell.accuracy = result.inputs, result.accuracy
        cell.simulated = bool(info.extra.get("simulated"))
        cell.outputs = len(result.outputs) if result.outputs else None
        why = "; ".join(result.failed_rules)
        computed = info.precision
        if computed != base.precision and not (base.precision == "int8" and computed == "fp32"):
            # e.g. an fp16 artifact the runtime ran in bf16 or f32
            note = "; ".join(filter(None, [note, f"the runtime computed in {computed}"]))
        cell.reason = "; ".join(r for r in (why, note) if r) or None
    cell.seconds = round(time.perf_counter() - started, 2)
    cell.cpu_seconds = round(time.process_time() - cpu, 2)
    return cell


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def say(self, message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    def cell(self, cell: Cell) -> None:
        self.done += 1
        where = f"[{self.done}/{self.total}] {cell.variant} {cell.precision} {cell.runtime}"
        reason = f": {cell.reason}" if cell.reason else ""
        self.say(f"{where}: {cell_text(cell)} ({cell.seconds or 0:.1f} s){reason}")


def run_source(
    source: Source,
    runtimes: list[str],
    precisions: list[str],
    args: argparse.Namespace,
    here: dict[str, str | None],
    exporter: Exporter,
    progress: Progress,
) -> tuple[list[Cell], dict[str, Any]]:
    """Every cell of one variant against its reference (computed once); and where time went."""
    started, cpu = time.perf_counter(), time.process_time()
    timing: dict[str, Any] = {
        "export_seconds": {},
        "export_cpu_seconds": {},
        "export_wait_seconds": {},
        "cell_seconds": {},
    }
    eager = source.eager if source.eager is not None else source.spec.build()
    source.eager = None  # one model in memory at a time
    data = source_images(source, eager.cfg.meta, precisions, args)
    progress.say(
        f"{source.label}: eager fp32 reference on {len(data.images)} images of {data.source} "
        f"{source.chw}"
    )
    reference = reference_outputs(eager, data.images, args.batch)
    timing["reference_seconds"] = round(time.perf_counter() - started, 2)
    timing["reference_cpu_seconds"] = round(time.process_time() - cpu, 2)
    fingerprint = weights_fingerprint(eager) if source.given is None else ""
    cells: list[Cell] = []

    def done(cell: Cell) -> None:
        timing["cell_seconds"][f"{cell.runtime}/{cell.precision}"] = cell.seconds
        progress.cell(cell)
        cells.append(cell)

    def measure(runtime: str, precision: str, prepare: Any, note: str | None = None) -> None:
        base = Cell(source.label, runtime, precision, "error")
        done(
            run_cell(
                base, prepare, data, reference, args.batch, args.threads, note, args.ov_precision
            )
        )

    if "torch" in runtimes:  # first: they need no export, which meanwhile runs in the worker
        for precision in precisions:
            measure("torch", precision, lambda p=precision: _torch_form(eager, source.chw, p))
    others = [r for r in runtimes if r != "torch"]
    for precision in precisions if others else []:
        found = _artifacts(source, precision, others, here, exporter, fingerprint, timing)
        for runtime in others:
            artifact = found.get(runtime, found.get("*"))
            if isinstance(artifact, Cell):  # unavailable, or its export failed
                done(replace(artifact, runtime=runtime, seconds=0.0))
            else:
                note = STALE_NOTE if artifact in source.stale else None
                measure(runtime, precision, lambda a=artifact: a, note)
    timing["total_seconds"] = round(time.perf_counter() - started, 2)
    timing["cpu_seconds"] = round(time.process_time() - cpu, 2)
    order = {(r, p): i for i, (p, r) in enumerate((p, r) for p in precisions for r in runtimes)}
    return sorted(cells, key=lambda c: order[(c.runtime, c.precision)]), timing


def _artifacts(
    source: Source,
    precision: str,
    runtimes: list[str],
    here: dict[str, str | None],
    exporter: Exporter,
    fingerprint: str,
    timing: dict[str, Any],
) -> dict[str, Path | Cell]:
    """runtime -> its artifact at ``precision``, or the cell saying why there is none."""
    found: dict[str, Path | Cell] = {}
    for runtime in runtimes:
        if here[runtime] is not None:
            found[runtime] = Cell(
                source.label,
                runtime,
                precision,
                "unavailable",
                reason=f"cannot run here: {here[runtime]}",
            )
        elif source.given is not None:
            target = target_of(runtime)
            missing = f"cannot run here: no {target} {precision} artifact in {source.given_dir}"
            found[runtime] = source.given.get((runtime, precision)) or Cell(
                source.label, runtime, precision, "unavailable", reason=missing
            )
    if source.given is None and len(found) < len(runtimes):
        waited = time.perf_counter()
        exported, result = exporter.get(source, precision, fingerprint)
        found = exported | found
        timing["export_wait_seconds"][precision] = round(time.perf_counter() - waited, 2)
        timing["export_seconds"][precision] = result.get("seconds")
        timing["export_cpu_seconds"][precision] = result.get("cpu_seconds")
    return found
