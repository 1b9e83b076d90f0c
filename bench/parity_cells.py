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
from partialnet.bench.parity_export import EXPORT_TARGET, Exporter
from partialnet.bench.parity_report import Cell, cell_text, one_line
from partialnet.bench.parity_sources import Source, weights_fingerprint
from partialnet.errors import MissingDependencyError
from partialnet.export import parity as gate
from partialnet.export.options import Precision
from partialnet.runtimes import RuntimeUnavailableError, open_runner

PROG = "partialnet-bench parity"
STALE_NOTE = "sha256 differs from manifest.json (the file changed after export)"


def parity_inputs(chw: tuple[int, int, int], batch: int, images: int) -> np.ndarray:
    """Exactly ``images`` of the export gate's seeded images (its stream for this batch)."""
    return np.concatenate(list(gate.seeded_batches(chw, batch, images)))[:images]


@torch.inference_mode()
def reference_outputs(eager: torch.nn.Module, inputs: np.ndarray, batch: int) -> np.ndarray:
    outs = []
    for i in range(0, len(inputs), batch):
        out = eager(torch.from_numpy(inputs[i : i + batch]))
        outs.append((out[0] if isinstance(out, (tuple, list)) else out).float().numpy())
    return np.concatenate(outs)


def _torch_form(
    eager: torch.nn.Module, chw: tuple[int, int, int], precision: str
) -> torch.nn.Module:
    from partialnet.inference import to_fp16

    inference = partialnet.reparameterize(eager, chw[1:])
    if precision == "fp16":  # same arithmetic; see the module docstring
        return to_fp16(inference).to(memory_format=torch.channels_last)
    return inference


def _infer_all(
    runner: Any, inputs: np.ndarray, batch: int, batch_range: tuple[int, int]
) -> np.ndarray:
    """Every image through ``runner`` in batches it accepts; for a fixed-batch artifact the
    last batch is padded with zeros whose outputs are dropped."""
    lo, hi = batch_range
    step = max(lo, min(batch, hi))
    outs = []
    for i in range(0, len(inputs), step):
        x = inputs[i : i + step]
        n = len(x)
        if n < lo:
            x = np.concatenate([x, np.zeros((lo - n, *x.shape[1:]), np.float32)])
        outs.append(runner.infer(np.ascontiguousarray(x))[:n])
    return np.concatenate(outs)


def _runner_options(runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if runtime in ("torch", "openvino"):
        options["precision"] = precision  # OpenVINO: the inference precision hint asked for
    if threads and runtime in ("torch", "onnxruntime", "openvino"):
        options["threads"] = threads
    return options


def _violations(result: gate.ParityResult, finite: bool) -> str:
    """Which of the gate's tolerances a failed cell broke, in words."""
    why = [] if finite else ["non-finite outputs"]
    if result.precision == Precision.FP32.value:
        if result.max_rel > gate.FP32_MAX_REL:
            why.append(f"max_rel {result.max_rel:.3g} > {gate.FP32_MAX_REL:g}")
        if result.cosine < gate.FP32_MIN_COSINE:
            why.append(f"cosine {result.cosine:.7f} < {gate.FP32_MIN_COSINE}")
        return "; ".join(why)
    if result.cosine < gate.FP16_MIN_COSINE:
        why.append(f"cosine {result.cosine:.5f} < {gate.FP16_MIN_COSINE}")
    if result.top1_agreement_within_ties < gate.FP16_MIN_TOP1:
        top1 = result.top1_agreement_within_ties
        why.append(f"top-1 {top1:.1%} (within fp16 ties) < {gate.FP16_MIN_TOP1:.0%}")
    return "; ".join(why)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def run_cell(
    base: Cell,
    prepare: Any,
    inputs: np.ndarray,
    reference: np.ndarray,
    batch: int,
    threads: int | None,
    note: str | None = None,
) -> Cell:
    """Open a runner on ``prepare()``'s artifact, run every image, judge against ``reference``."""
    started, cpu = time.perf_counter(), time.process_time()
    cell = Cell(base.variant, base.runtime, base.precision, "error")
    try:
        artifact = prepare()
        cell.artifact = str(artifact) if isinstance(artifact, Path) else None
        options = _runner_options(base.runtime, base.precision, threads)
        with open_runner(base.runtime, artifact, **options) as runner:
            info = runner.info()
            out = _infer_all(runner, inputs, batch, info.batch_range)
        result = gate.compare(reference, out, Precision(base.precision))
    except (RuntimeUnavailableError, MissingDependencyError) as exc:
        cell.status, cell.reason = "unavailable", f"cannot run here: {one_line(exc)}"
    except Exception as exc:  # a broken artifact or a bug: reported, and the exit code is 1
        cell.reason = f"error: {type(exc).__name__}: {one_line(exc)}"
    else:
        cell.status = "pass" if result.passed else "fail"
        cell.max_abs, cell.max_rel = _finite(result.max_abs), _finite(result.max_rel)
        cell.cosine, cell.top1_agreement = _finite(result.cosine), result.top1_agreement
        cell.top1_agreement_within_ties = result.top1_agreement_within_ties
        cell.images, cell.runner_precision = result.images, info.precision
        why = "" if result.passed else _violations(result, bool(np.isfinite(out).all()))
        if info.precision != base.precision:  # e.g. an fp16 IR on a CPU without fp16
            note = "; ".join(filter(None, [note, f"the runtime computed in {info.precision}"]))
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
    inputs = parity_inputs(source.chw, args.batch, args.images)
    progress.say(f"{source.label}: eager fp32 reference on {len(inputs)} images {source.chw}")
    reference = reference_outputs(eager, inputs, args.batch)
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
        done(run_cell(base, prepare, inputs, reference, args.batch, args.threads, note))

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
            target = EXPORT_TARGET[runtime]
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
