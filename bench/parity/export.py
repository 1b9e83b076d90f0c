"""The parity matrix's exports, queued on one background process so that they overlap with
the reference and the torch cells."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from partialnet.bench.parity.report import Cell, one_line
from partialnet.bench.parity.sources import ModelSpec, Source, weights_fingerprint
from partialnet.errors import MissingDependencyError
from partialnet.export.cli.progress import progress_to_stderr
from partialnet.export.options import needs_calibration
from partialnet.export.targets import runtime_of, spec_for_runtime, spec_of

PROG = "partialnet-bench parity"

_WORKER_MODEL: dict[ModelSpec, torch.nn.Module] = {}


def export_job(
    label: str,
    spec: ModelSpec,
    precision: str,
    groups: list[tuple[list[str], dict[str, Any]]],
    chw: tuple[int, int, int],
    out_dir: str,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs in the worker: export every group; target -> path, or (status, reason).

    ``data`` (eval_data, calibration_data, calibration_images) goes to int8 exports, which
    calibrate on the same seeded sample, minus the same held-out images, as the cells check.
    """
    from partialnet.export import export
    from partialnet.export.source import RANDOM_WEIGHTS_NOTE

    torch.set_num_threads(1)  # the export is single-threaded Python; leave the cores to cells
    started, cpu = time.perf_counter(), time.process_time()
    if spec not in _WORKER_MODEL:
        _WORKER_MODEL.clear()
        _WORKER_MODEL[spec] = spec.build()
    model = _WORKER_MODEL[spec]

    def line(_record: logging.LogRecord, text: str) -> str | None:
        if RANDOM_WEIGHTS_NOTE in text:  # said once, at the start
            return None
        return f"{PROG}:   export {label} {precision}: {text.strip()}"

    found: dict[str, Any] = {}
    for targets, shape in groups:
        try:
            with progress_to_stderr(line):
                manifest = export(
                    model,
                    targets=targets,
                    precision=precision,
                    imgsz=chw[1:],
                    verify=False,
                    output_dir=out_dir,
                    replace=True,  # the parity run's own folder: a rerun's model takes it over
                    features=spec.features,
                    **shape,
                    **((data or {}) if needs_calibration(precision) else {}),
                )
        except MissingDependencyError as exc:
            found |= dict.fromkeys(targets, ("unavailable", f"cannot run here: {one_line(exc)}"))
            continue
        except Exception as exc:  # an export bug: every cell that needed it is an error
            reason = f"error: export failed: {type(exc).__name__}: {one_line(exc)}"
            found |= dict.fromkeys(targets, ("error", reason))
            continue
        for record in manifest.artifacts:
            if not spec_of(record.target).for_runtime(record.details):
                continue  # int8: another target's Q/DQ graph, not this runtime's to check
            if record.precision == precision and record.target in targets:
                found[record.target] = str(Path(out_dir) / record.path)
        found |= {
            t: ("error", f"error: export wrote no {t} artifact") for t in targets if t not in found
        }
    seconds = round(time.perf_counter() - started, 2)
    return {
        "found": found,
        "fingerprint": weights_fingerprint(model),
        "seconds": seconds,
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


class Exporter:
    """Queues every (variant, precision) export at once on one worker process, so exports
    overlap with the reference and the torch cells; ``get`` waits for one."""

    def __init__(
        self,
        sources: list[Source],
        precisions: list[str],
        runtimes: list[str],
        args: argparse.Namespace,
    ) -> None:
        self.jobs: dict[tuple[str, str], Future[dict[str, Any]]] = {}
        todo = [s for s in sources if s.given is None]
        if not todo or not runtimes:
            self.pool = None
            return
        batch = args.batch
        specs = [s for s in map(spec_for_runtime, runtimes) if s is not None]
        flexible = [s.name for s in specs if s.dynamic_batch]
        groups = [(flexible, {"dynamic_batch": (1, batch, batch)} if batch > 1 else {"batch": 1})]
        fixed = [s.name for s in specs if not s.dynamic_batch]  # a fixed batch only
        if fixed:
            groups.append((fixed, {"batch": batch}))
        groups = [g for g in groups if g[0]]
        data = {
            "eval_data": args.eval_data,
            "calibration_data": args.calibration_data,
            "calibration_images": args.calibration_images,
        }
        context = multiprocessing.get_context("spawn")  # never fork a process running torch
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        for source in todo:
            out_dir = str(args.output / "artifacts" / source.label)
            for precision in precisions:
                job = (source.label, source.spec, precision, groups, source.chw, out_dir, data)
                self.jobs[(source.label, precision)] = self.pool.submit(export_job, *job)

    def get(
        self, source: Source, precision: str, fingerprint: str
    ) -> tuple[dict[str, Path | Cell], dict[str, Any]]:
        try:
            result = self.jobs[(source.label, precision)].result()
        except Exception as exc:  # the worker itself died (out of memory, killed)
            reason = f"error: export worker failed: {type(exc).__name__}: {one_line(exc)}"
            return {"*": Cell(source.label, "", precision, "error", reason=reason)}, {}
        found: dict[str, Path | Cell] = {}
        for target, value in result["found"].items():
            runtime = runtime_of(target)
            if isinstance(value, str):
                found[runtime] = Path(value)
            else:
                found[runtime] = Cell(source.label, runtime, precision, value[0], reason=value[1])
        if result["fingerprint"] != fingerprint:
            reason = "error: the export worker's model differs from the reference model (weights)"
            found = dict.fromkeys(found, Cell(source.label, "", precision, "error", reason=reason))
        return found, result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
