"""partialnet-bench parity: every variant x runtime x precision against the eager fp32 model.

The reference is the eager (training-form) model in fp32 on the export gate's seeded inputs
(``partialnet.export.parity.seeded_batches``), computed once per variant and shared by all
of its cells; each cell is judged by the gate's own ``compare`` and tolerances. ``torch``
runs the inference form (``reparameterize``, plus ``to_fp16`` for fp16) through the torch
runner; ``onnxruntime``/``openvino`` run the artifacts of one ``export(targets="onnx,openvino",
verify=False)`` per variant and precision, or those listed in ``--artifacts DIR``'s manifest;
``tensorrt``/``coreml`` are exported only when asked for and able to run here. A runtime
that cannot run here gives an ``unavailable`` cell with the reason, never a number that was
not measured; any other exception gives an ``error`` cell (exit 1, like a ``fail``).

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
channels_last, which is the same arithmetic 3-4x faster than NCHW there). ONNX Runtime and
OpenVINO take about as long at fp16 as at fp32 (OpenVINO reports computing fp16 IR in f32).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import partialnet
from partialnet.bench.args import UsageParser, comma_choices
from partialnet.bench.environment import collect_environment
from partialnet.bench.parity_report import (
    Cell,
    cell_text,
    format_matrix,
    summary,
    tolerances,
    write_outputs,
)
from partialnet.errors import MissingDependencyError, UsageError
from partialnet.export import parity as gate
from partialnet.export.files import sha256_path
from partialnet.export.options import TARGET_RUNTIME, Precision
from partialnet.runtimes import RuntimeUnavailableError, available_runtimes, open_runner
from partialnet.runtimes.base import Runtime

PROG = "partialnet-bench parity"
RUNTIMES = tuple(r.value for r in Runtime)
DEFAULT_RUNTIMES = ("onnxruntime", "openvino", "torch")
PRECISIONS = tuple(p.value for p in Precision)
EXPORT_TARGET = {runtime: target for target, runtime in TARGET_RUNTIME.items()}
STALE_NOTE = "sha256 differs from manifest.json (the file changed after export)"
MAX_REASON = 400


@dataclass(frozen=True)
class ModelSpec:
    """How to build the eager model: here, and again in the export worker."""

    variant: str | None  # the variant, or a checkpoint's variant hint
    checkpoint: str | None = None

    def build(self) -> torch.nn.Module:
        if self.checkpoint is not None:
            return partialnet.load_checkpoint(self.checkpoint, variant=self.variant).float().eval()
        torch.manual_seed(0)  # as partialnet-export --variant: the same random weights each run
        return partialnet.create_model(str(self.variant)).eval()


@dataclass
class Source:
    """One variant (row group): its model and where its artifacts come from."""

    label: str
    spec: ModelSpec
    chw: tuple[int, int, int]
    eager: torch.nn.Module | None = None
    given: dict[tuple[str, str], Path] | None = None  # from --artifacts; None: export here
    given_dir: Path | None = None
    stale: set[Path] = field(default_factory=set)  # files whose sha256 is not the manifest's


# --- command line --------------------------------------------------------------------------


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
        help=f"of {','.join(RUNTIMES)} (default: {','.join(DEFAULT_RUNTIMES)})",
    )
    add(
        "--precisions",
        type=comma_choices("precision", PRECISIONS),
        help="of fp32,fp16 (default: both; with --artifacts, those its manifests list)",
    )
    add(
        "--images",
        type=_positive,
        default=gate.PARITY_IMAGES,
        help="seeded images per cell (default %(default)s, as the export gate)",
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
        "--artifacts",
        type=Path,
        help="check the artifacts in this export directory's manifest.json (or in its "
        "subdirectories') instead of exporting",
    )
    return p


# --- where the models and artifacts come from ---------------------------------------------


def _sources(args: argparse.Namespace) -> list[Source]:
    if args.artifacts is not None:
        return _artifact_sources(args)
    if not args.checkpoint:
        return [_source(ModelSpec(v)) for v in args.variants or partialnet.list_variants()]
    hints = args.variants or [None] * len(args.checkpoint)
    if len(hints) != len(args.checkpoint):
        raise UsageError(
            "with --checkpoint the variant comes from the checkpoint: drop --variants, or "
            "give exactly one variant per --checkpoint as a hint"
        )
    sources = [
        _source(ModelSpec(h, str(p)), keep=True)
        for p, h in zip(args.checkpoint, hints, strict=True)
    ]
    return _unique_labels(sources, [p.stem for p in args.checkpoint])


def _source(spec: ModelSpec, keep: bool = False) -> Source:
    """A source for ``spec``; checkpoints are loaded now (a bad one is bad usage) and kept."""
    if spec.checkpoint is None:
        cfg = partialnet.get_config(str(spec.variant))
        return Source(cfg.name, spec, (cfg.in_chans, *cfg.meta.input_size))
    model = spec.build()
    return Source(
        model.cfg.name,
        spec,
        (model.cfg.in_chans, *model.cfg.meta.input_size),
        model if keep else None,
    )


def _unique_labels(sources: list[Source], tags: list[str]) -> list[Source]:
    labels = [s.label for s in sources]
    for source, tag in zip(sources, tags, strict=True):
        if labels.count(source.label) > 1:
            source.label = f"{source.label}@{tag}"
    return sources


def _artifact_sources(args: argparse.Namespace) -> list[Source]:
    """One source per manifest.json in --artifacts DIR or in its direct subdirectories."""
    from partialnet.export.manifest import MANIFEST_NAME, load_manifest

    root: Path = args.artifacts
    dirs = [root] if (root / MANIFEST_NAME).is_file() else []
    if not dirs and root.is_dir():
        dirs = sorted(d for d in root.iterdir() if (d / MANIFEST_NAME).is_file())
    if not dirs:
        raise UsageError(
            f"no {MANIFEST_NAME} in {root} or its subdirectories: pass a partialnet-export "
            "output directory (or a parity run's <output>/artifacts)"
        )
    checkpoints = {sha256_path(p): p for p in args.checkpoint or [] if p.is_file()}
    sources = []
    for directory in dirs:
        manifest = load_manifest(directory)
        if manifest is None:
            raise UsageError(f"{directory / MANIFEST_NAME} cannot be read as an export manifest")
        if args.variants and manifest.variant not in args.variants:
            continue
        source = _source(_manifest_spec(manifest, directory, checkpoints), keep=True)
        source.chw = (source.chw[0], *manifest.input_size)  # the size it was exported at
        source.given, source.given_dir = {}, directory
        for record in manifest.artifacts:
            path = directory / record.path
            if record.target in TARGET_RUNTIME and path.exists():
                source.given[(TARGET_RUNTIME[record.target], record.precision)] = path
                if sha256_path(path) != record.sha256:
                    source.stale.add(path)
        sources.append(source)
    if not sources:
        raise UsageError(f"no manifest in {root} is for {', '.join(args.variants)}")
    return _unique_labels(sources, [str(s.given_dir) for s in sources])


def _manifest_spec(manifest: Any, directory: Path, checkpoints: dict[str, Path]) -> ModelSpec:
    """The model the manifest's artifacts were exported from: its checkpoint, or for random
    weights the variant seeded as ``partialnet-export --variant`` seeds it."""
    if manifest.checkpoint is None:
        if manifest.variant not in partialnet.list_variants():
            raise UsageError(f"{directory}: unknown variant {manifest.variant!r} in manifest.json")
        return ModelSpec(manifest.variant)
    sha = str(manifest.checkpoint.get("sha256"))
    if sha not in checkpoints:
        raise UsageError(
            f"{directory} was exported from checkpoint {manifest.checkpoint.get('path')} "
            f"(sha256 {sha[:12]}...): pass that file with --checkpoint"
        )
    return ModelSpec(manifest.variant, str(checkpoints[sha]))


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- exporting, in a background process ----------------------------------------------------

_WORKER_MODEL: dict[ModelSpec, torch.nn.Module] = {}


def _export_job(
    label: str,
    spec: ModelSpec,
    precision: str,
    groups: list[tuple[list[str], dict[str, Any]]],
    chw: tuple[int, int, int],
    out_dir: str,
) -> dict[str, Any]:
    """Runs in the worker: export every group; target -> path, or (status, reason)."""
    from partialnet.export import export
    from partialnet.export.source import RANDOM_WEIGHTS_NOTE

    torch.set_num_threads(1)  # the export is single-threaded Python; leave the cores to cells
    started, cpu = time.perf_counter(), time.process_time()
    if spec not in _WORKER_MODEL:
        _WORKER_MODEL.clear()
        _WORKER_MODEL[spec] = spec.build()
    model = _WORKER_MODEL[spec]

    def say(message: str) -> None:
        if RANDOM_WEIGHTS_NOTE not in message:  # said once, at the start
            print(
                f"{PROG}:   export {label} {precision}: {message.strip()}",
                file=sys.stderr,
                flush=True,
            )

    found: dict[str, Any] = {}
    for targets, shape in groups:
        try:
            manifest = export(
                model,
                targets=targets,
                precision=precision,
                imgsz=chw[1:],
                verify=False,
                output_dir=out_dir,
                progress=say,
                **shape,
            )
        except MissingDependencyError as exc:
            found |= dict.fromkeys(targets, ("unavailable", f"cannot run here: {_one_line(exc)}"))
            continue
        except Exception as exc:  # an export bug: every cell that needed it is an error
            reason = f"error: export failed: {type(exc).__name__}: {_one_line(exc)}"
            found |= dict.fromkeys(targets, ("error", reason))
            continue
        for record in manifest.artifacts:
            if record.precision == precision and record.target in targets:
                found[record.target] = str(Path(out_dir) / record.path)
        found |= {
            t: ("error", f"error: export wrote no {t} artifact") for t in targets if t not in found
        }
    seconds = round(time.perf_counter() - started, 2)
    return {
        "found": found,
        "fingerprint": _fingerprint(model),
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
        flexible = [EXPORT_TARGET[r] for r in runtimes if r != "coreml"]
        groups = [(flexible, {"dynamic_batch": (1, batch, batch)} if batch > 1 else {"batch": 1})]
        if "coreml" in runtimes:  # CoreML takes a fixed batch only
            groups.append((["coreml"], {"batch": batch}))
        groups = [g for g in groups if g[0]]
        context = multiprocessing.get_context("spawn")  # never fork a process running torch
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        for source in todo:
            out_dir = str(args.output / "artifacts" / source.label)
            for precision in precisions:
                job = (source.label, source.spec, precision, groups, source.chw, out_dir)
                self.jobs[(source.label, precision)] = self.pool.submit(_export_job, *job)

    def get(
        self, source: Source, precision: str, fingerprint: str
    ) -> tuple[dict[str, Path | Cell], dict[str, Any]]:
        try:
            result = self.jobs[(source.label, precision)].result()
        except Exception as exc:  # the worker itself died (out of memory, killed)
            reason = f"error: export worker failed: {type(exc).__name__}: {_one_line(exc)}"
            return {"*": Cell(source.label, "", precision, "error", reason=reason)}, {}
        found: dict[str, Path | Cell] = {}
        for target, value in result["found"].items():
            runtime = TARGET_RUNTIME[target]
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


# --- running one cell ----------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _inputs(chw: tuple[int, int, int], batch: int, images: int) -> np.ndarray:
    """Exactly ``images`` of the export gate's seeded images (its stream for this batch)."""
    return np.concatenate(list(gate.seeded_batches(chw, batch, images)))[:images]


@torch.inference_mode()
def _reference(eager: torch.nn.Module, inputs: np.ndarray, batch: int) -> np.ndarray:
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
        cell.status, cell.reason = "unavailable", f"cannot run here: {_one_line(exc)}"
    except Exception as exc:  # a broken artifact or a bug: reported, and the exit code is 1
        cell.reason = f"error: {type(exc).__name__}: {_one_line(exc)}"
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


# --- one variant ---------------------------------------------------------------------------


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def say(self, message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    def cell(self, cell: Cell) -> None:
        self.done += 1
        where = f"[{self.done}/{self.total}] {cell.variant} {cell.precision} {cell.runtime}"
        reason = f": {cell.reason}" if cell.reason else ""
        self.say(f"{where}: {cell_text(cell)} ({cell.seconds or 0:.1f} s){reason}")


def _run_source(
    source: Source,
    runtimes: list[str],
    precisions: list[str],
    args: argparse.Namespace,
    here: dict[str, str | None],
    exporter: Exporter,
    progress: _Progress,
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
    inputs = _inputs(source.chw, args.batch, args.images)
    progress.say(f"{source.label}: eager fp32 reference on {len(inputs)} images {source.chw}")
    reference = _reference(eager, inputs, args.batch)
    timing["reference_seconds"] = round(time.perf_counter() - started, 2)
    timing["reference_cpu_seconds"] = round(time.process_time() - cpu, 2)
    fingerprint = _fingerprint(eager) if source.given is None else ""
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


# --- the command ---------------------------------------------------------------------------


def _plan(args: argparse.Namespace, sources: list[Source]) -> tuple[list[str], list[str]]:
    runtimes = args.runtimes or list(DEFAULT_RUNTIMES)
    precisions = args.precisions
    if precisions is None and args.artifacts is not None:  # what the manifests hold
        held = {p for s in sources for (_, p) in s.given or {}}
        precisions = [p for p in PRECISIONS if p in held]
    return runtimes, precisions or list(PRECISIONS)


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
    sources = _sources(args)
    runtimes, precisions = _plan(args, sources)
    here = {r: reason for r, reason in available_runtimes().items() if r in runtimes}
    progress = _Progress(len(sources) * len(runtimes) * len(precisions))
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
            results[source.label] = _run_source(
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
    return 1 if any(c.status in ("fail", "error") for c in cells) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(build_parser().parse_args(argv), argv)
    except UsageError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
