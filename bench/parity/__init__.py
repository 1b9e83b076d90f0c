"""partialnet-bench parity: every variant x runtime x precision against the eager fp32 model.

The reference is the eager (training-form) model in fp32 on the export gate's seeded inputs
(``partialnet.export.gate.parity.seeded_batches``), computed once per variant and shared by all
of its cells; each cell is judged by the gate's own ``compare`` and tolerances. ``torch``
runs the inference form (``reparameterize``, plus ``to_fp16`` for fp16) through the torch
runner; the runtimes of the ``parity_default`` targets (those that run on any CPU) run the
artifacts of one ``export(targets=<those targets>, verify=False)`` per variant and precision;
the other targets' runtimes are exported only when asked for and able to run here.
``--artifacts DIR`` checks every artifact its manifests list, each with its target's runtime
(``--runtimes`` narrows it). A runtime that cannot run here gives an ``unavailable`` cell
with the reason, never a number that was not measured; any other exception gives an
``error`` cell (exit 1, like a ``fail``); an ``--artifacts`` run that checked no artifact at
all says so and exits 1.

parity.json: ``{"environment", "tolerances", "cells", "timing"}``. Each cell has ``variant,
runtime, precision, status (pass|fail|unavailable|error), max_abs, max_rel, cosine,
top1_agreement, images, reason`` (numbers null unless measured), then
``top1_agreement_within_ties`` (the figure the fp16 rule uses, see the gate), ``seconds``,
``cpu_seconds``, ``runner_precision`` (what the runtime reports computing in) and ``artifact``.

Where the time goes (2 shared CPU cores, all six variants, 64 images: ~12 min wall, CPU-bound
at ~22 CPU-minutes): each of the 12 dynamo ONNX exports is single-threaded Python, 20-70 s,
so they run in one background process while this one computes; nothing waits for them
once the largest variant goes first. The slowest cells are torch fp16: without native fp16
convolution PyTorch runs its reference kernel (PartialNet-L: ~3 s an image even in
channels_last, which is the same arithmetic 3-4x faster than NCHW there). The CPU runtimes
take about as long at fp16 as at fp32 (without native fp16 they compute in f32 and say so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import partialnet
from partialnet.bench.args import UsageParser, comma_choices, execution_precisions
from partialnet.bench.environment import collect_environment
from partialnet.bench.parity.cells import Progress, run_source
from partialnet.bench.parity.export import Exporter
from partialnet.bench.parity.report import Cell, format_matrix, summary, tolerances, write_outputs
from partialnet.bench.parity.sources import Source, sources_from_args
from partialnet.errors import UsageError
from partialnet.export.cli.errors import run_guarded
from partialnet.export.gate import parity as gate
from partialnet.export.options import ARTIFACT_PRECISIONS, DEFAULT_CALIBRATION_IMAGES
from partialnet.export.options import PRECISIONS as PRECISIONS_SPECS
from partialnet.export.targets import TARGETS
from partialnet.runtimes import available_runtimes
from partialnet.runtimes.base import Runtime

PROG = "partialnet-bench parity"
RUNTIMES = (Runtime.TORCH.value, *(spec.runtime.value for spec in TARGETS))
# Exported here by default: the targets whose runtimes run on any CPU; the others when asked.
DEFAULT_RUNTIMES = (*(s.runtime.value for s in TARGETS if s.parity_default), Runtime.TORCH.value)
PRECISIONS = tuple(p.value for p in ARTIFACT_PRECISIONS)
# Those that need no calibration images.
DEFAULT_PRECISIONS = tuple(
    p.value for p, s in PRECISIONS_SPECS.items() if not (s.needs_calibration or s.selection)
)
OV_PRECISIONS, EXECUTING = execution_precisions()  # --ov-precision: choices, runtimes


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    variants = tuple(partialnet.list_variants())
    p = UsageParser(prog=PROG, description="Parity of every runtime against the eager fp32 model.")
    add = p.add_argument
    add(
        "--variants",
        type=comma_choices("variant", variants),
        help=f"of {','.join(variants)} (default: all)",
    )
    add(
        "--runtimes",
        type=comma_choices("runtime", RUNTIMES),
        help=f"of {','.join(RUNTIMES)} (default: {','.join(DEFAULT_RUNTIMES)}; with "
        "--artifacts, torch and the runtime of every artifact its manifests list)",
    )
    add(
        "--precisions",
        type=comma_choices("precision", PRECISIONS),
        help=f"of {','.join(PRECISIONS)} (default: fp32,fp16; with --artifacts, those its "
        "manifests list; int8 needs --calibration-data)",
    )
    add(
        "--ov-precision",
        choices=OV_PRECISIONS,
        default=None,
        help=f"{EXECUTING} execution precision (default: the artifact's own, f32 for fp32 and "
        "int8)",
    )
    add(
        "--images",
        type=_positive,
        default=gate.PARITY_IMAGES,
        help="seeded noise images per cell without image folders (default %(default)s, as "
        "the export gate)",
    )
    add("--batch", type=_positive, default=8, help="batch size (default %(default)s)")
    add("--threads", type=_positive, help="threads per runtime (default: each runtime's own)")
    add("--output", type=Path, default=Path("parity-results"), help="default: %(default)s/")
    add(
        "--checkpoint",
        type=Path,
        action="append",
        help="weights (repeatable); the variant comes from it",
    )
    add(
        "--features",
        action="store_true",
        help="check the backbones (four stage maps, each output on its own) instead of the "
        "classifiers",
    )
    add(
        "--eval-data",
        type=Path,
        help="labelled images (ImageFolder layout): every cell runs them and reports "
        "accuracy beside the eager fp32 model's",
    )
    add(
        "--calibration-data",
        type=Path,
        help="any folder of images: what the cells run without --eval-data (instead of "
        "seeded noise), and int8's calibration images",
    )
    add(
        "--calibration-images",
        type=_positive,
        default=DEFAULT_CALIBRATION_IMAGES,
        help="a seeded sample of this many calibration images (default %(default)s)",
    )
    add(
        "--artifacts",
        type=Path,
        help="check the artifacts in this export directory's manifest.json (or in its "
        "subdirectories') instead of exporting",
    )
    return p


def _plan(args: argparse.Namespace, sources: list[Source]) -> tuple[list[str], list[str]]:
    runtimes, precisions = args.runtimes, args.precisions
    if args.artifacts is not None:  # what the manifests hold, each by its target's runtime
        if runtimes is None:
            held_runtimes = {r for s in sources for (r, _) in s.given or {}}
            runtimes = ["torch", *(r for r in RUNTIMES if r in held_runtimes)]
        if precisions is None:
            held = {p for s in sources for (_, p) in s.given or {}}
            precisions = [p for p in PRECISIONS if p in held]
    return runtimes or list(DEFAULT_RUNTIMES), precisions or list(DEFAULT_PRECISIONS)


def _checked_nothing(cells: list[Cell]) -> str | None:
    """Why an --artifacts run checked no artifact (every artifact cell unavailable), or None."""
    artifact_cells = [c for c in cells if c.runtime != "torch"]
    if any(c.status != "unavailable" for c in artifact_cells):
        return None
    if not artifact_cells:
        return "no artifact cell was asked for (--runtimes names no artifact's runtime)"
    reasons = sorted({f"{c.runtime}: {c.reason}" for c in artifact_cells})
    return "every artifact was unavailable here (" + "; ".join(reasons) + ")"


def _check_folders(sources: list[Source], args: argparse.Namespace) -> None:
    """Refuse unusable image folders before the first cell runs (one line, exit 2)."""
    from partialnet.images import calibration_images, labelled_folder

    if args.eval_data is not None and any(s.spec.features for s in sources):
        raise UsageError(
            "--eval-data measures classification accuracy; backbones have no classes: use "
            "--calibration-data images with --features"
        )
    if args.eval_data is not None:
        for source in sources:
            if source.eager is not None:
                classes = source.eager.cfg.num_classes
            else:
                classes = partialnet.get_config(str(source.spec.variant)).num_classes
            labelled_folder(args.eval_data, num_classes=classes)
    if args.calibration_data is not None:
        calibration_images(args.calibration_data, args.calibration_images)


def _size_rank(source: Source) -> int:
    """The variant's place in t0 < t1 < t2 < s < m < l (list_variants' order)."""
    variants = partialnet.list_variants()
    name = source.label.split("@")[0]
    return variants.index(name) if name in variants else len(variants)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    started, cpu = time.perf_counter(), time.process_time()
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the output directory {args.output}: {exc.strerror}"
        ) from None
    environment = collect_environment(args.threads, ["partialnet-bench", "parity", *argv])
    sources = sources_from_args(args)
    _check_folders(sources, args)
    runtimes, precisions = _plan(args, sources)
    here = {r: reason for r, reason in available_runtimes().items() if r in runtimes}
    progress = Progress(len(sources) * len(runtimes) * len(precisions))
    if any(s.spec.checkpoint is None for s in sources):
        from partialnet.export.source import RANDOM_WEIGHTS_NOTE

        progress.say(f"note: {RANDOM_WEIGHTS_NOTE.replace('exporting', 'checking')}")
    wanted = [r for r in runtimes if r != "torch" and here[r] is None]
    # Largest first: its torch cells outlast its export, and the worker runs ahead after it.
    order = sorted(sources, key=_size_rank, reverse=True)
    exporter = Exporter(order, precisions, wanted, args)
    results: dict[str, tuple[list[Cell], dict[str, Any]]] = {}
    try:
        for source in order:
            results[source.label] = run_source(
                source, runtimes, precisions, args, here, exporter, progress
            )
    finally:
        exporter.close()
    cells = [cell for source in sources for cell in results[source.label][0]]
    timing: dict[str, Any] = {"variants": {s.label: results[s.label][1] for s in sources}}
    timing["total_seconds"] = round(time.perf_counter() - started, 2)
    timing["cpu_seconds"] = round(time.process_time() - cpu, 2)  # this process; not the worker
    environment |= {"runtimes": here, "images": args.images, "batch": args.batch}
    environment["load_average_at_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    report = {
        "environment": environment,
        "tolerances": tolerances(),
        "cells": [asdict(c) for c in cells],
        "timing": timing,
    }
    write_outputs(report, runtimes, args.output)
    print(format_matrix(cells, runtimes))
    print(
        f"\n{summary(cells)} in {timing['total_seconds']:.1f} s; "
        f"wrote {args.output / 'parity.json'} and parity.md"
    )
    nothing = _checked_nothing(cells) if args.artifacts is not None else None
    if nothing is not None:
        print(f"{PROG}: checked no artifact of {args.artifacts}: {nothing}", file=sys.stderr)
        return 1
    return 1 if any(c.status in ("fail", "error") for c in cells) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    return run_guarded(PROG, lambda: run(build_parser().parse_args(argv), argv), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
