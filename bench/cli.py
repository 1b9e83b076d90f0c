"""partialnet-bench: latency and throughput of PartialNet on each runtime, one at a time.

``partialnet-bench [latency] --variant t1 | --artifacts DIR ...`` is implemented here; any
subcommand in ``SUBCOMMANDS`` (``parity``) lives in its own module with a ``main(argv) -> int``
and is dispatched to on the first positional argument.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialnet.bench.args import UsageParser, comma_choices, execution_precisions
from partialnet.bench.environment import PeakGemm, collect_environment
from partialnet.bench.perf.compare import compare_reports, format_comparison
from partialnet.bench.perf.measure import PeakMemory, ProgressLine, current_rss_mb, measure_runner
from partialnet.bench.perf.plots import plot_latency, plot_throughput
from partialnet.bench.perf.report import load_json, measured_cell, skipped_cell, write_report
from partialnet.bench.perf.selection import format_selection
from partialnet.errors import MissingDependencyError, UsageError
from partialnet.export.cli.errors import run_guarded
from partialnet.export.options import ARTIFACT_PRECISIONS, needs_calibration
from partialnet.export.output.manifest import read_verified_manifest, resolve_artifact
from partialnet.export.targets import TARGETS, runtime_of, spec_for_runtime, spec_of, target_of
from partialnet.runtimes.base import Runtime, RuntimeUnavailableError

PROG = "partialnet-bench"
SUBCOMMANDS = {
    "parity": "partialnet.bench.parity",
    "check": "partialnet.bench.check",
    "compare": "partialnet.bench.check.fleet",
}
TORCH_INFERENCE = "torch-inference"  # torch running the reparameterized (inference) form
RUNTIME_NAMES = ("torch", TORCH_INFERENCE, *(spec.runtime.value for spec in TARGETS))
PRECISIONS = tuple(p.value for p in ARTIFACT_PRECISIONS)
OV_PRECISIONS, EXECUTING = execution_precisions()  # --ov-precision: choices, runtimes


class _Skip(Exception):
    """This job cannot run here; the message is the reason written into its cells."""


@dataclass
class Job:
    """One runtime on one artifact: a file, the eager model, or one still to be made."""

    name: str  # a Runtime value, or torch-inference
    input_chw: tuple[int, ...]
    precision: str = "fp32"
    artifact: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None
    ov_precision: str | None = None  # an execution precision asked; None: the artifact's own

    @property
    def runtime(self) -> Runtime:
        return Runtime.TORCH if self.name == TORCH_INFERENCE else Runtime(self.name)


@dataclass
class Run:
    args: argparse.Namespace
    variant: str
    model: Any  # the eager model, or None for an unregistered variant
    flops_per_image: float | None
    tmp: Path
    open_runner: Callable[..., Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[tuple[str, str, str, int], tuple[float, ...]] = field(default_factory=dict)
    runners: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: bool = False


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog=PROG, description="Latency/throughput of PartialNet on each runtime.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--variant", help="build this variant (random weights) and time it")
    src.add_argument("--artifacts", type=Path, help="a partialnet-export output directory")
    names = ",".join(RUNTIME_NAMES)
    p.add_argument(
        "--runtimes",
        type=comma_choices("runtime", RUNTIME_NAMES),
        help=f"of {names} (default: all)",
    )
    p.add_argument("--batch", type=parse_batches, default=[1], help="comma list, e.g. 1,8,32")
    p.add_argument("--threads", type=_int_at_least(1), help="threads (default: runtime's own)")
    p.add_argument("--warmup", type=_int_at_least(0), default=5, help="untimed calls per cell")
    count = p.add_mutually_exclusive_group()
    count.add_argument("--iterations", type=_int_at_least(1), help="timed calls (default 50)")
    count.add_argument("--duration", type=_seconds, help="seconds of timed calls per cell")
    p.add_argument("--output", type=Path, default=Path("bench-results"), help="output directory")
    p.add_argument("--compare", type=Path, metavar="REPORT", help="ratios to it")
    p.add_argument("--peak-gemm", type=_int_at_least(0), default=2048, help="GEMM side; 0: none")
    p.add_argument(
        "--precisions",
        type=comma_choices("precision", PRECISIONS),
        default=["fp32"],
        help="artifact precisions to export and time with --variant (torch runs fp32): "
        f"of {','.join(PRECISIONS)}; int8 needs --calibration-data",
    )
    p.add_argument(
        "--ov-precision",
        type=comma_choices(f"{EXECUTING} precision", OV_PRECISIONS),
        default=None,
        help=f"{EXECUTING} execution precision(s), one row each, e.g. fp32,bf16 (default: the "
        f"artifact's own; 'auto' is {EXECUTING}'s choice for this CPU)",
    )
    p.add_argument(
        "--calibration-data",
        type=Path,
        metavar="DIR",
        help="images to calibrate int8 exports with (a folder, searched recursively)",
    )
    return p


def parse_batches(text: str) -> list[int]:
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"bad --batch {text!r}: give positive integers separated by commas")
    return list(dict.fromkeys(int(p) for p in parts))


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise UsageError(f"expected an integer >= {minimum}, got {text!r}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    value = float(text) if text.strip().replace(".", "", 1).isdigit() else 0.0
    if value <= 0:
        raise UsageError(f"expected a positive number of seconds, got {text!r}")
    return value


def _jobs(
    args: argparse.Namespace,
    manifest: dict[str, Any] | None,
    model: Any,
    no_model: str | None = None,
) -> list[Job]:
    """One job per requested runtime, or per matching artifact with --artifacts."""
    entries = manifest["artifacts"] if manifest else []
    if entries:
        chw = tuple(entries[0]["input_shape"][1:])
    else:
        chw = (model.cfg.in_chans, *model.cfg.meta.input_size) if model else (3, 224, 224)
    found = [runtime_of(e["target"]) for e in entries if runtime_of(e["target"])]
    names = args.runtimes or (list(dict.fromkeys(found)) if manifest else list(RUNTIME_NAMES))
    jobs = []
    for name in names:
        if name in ("torch", TORCH_INFERENCE):
            why = None if model else f"{manifest and manifest.get('variant')!r} is not a variant"
            why = no_model or why
            jobs.append(Job(name, chw, artifact=model, skip=why))
        elif manifest is None:  # exported when its turn comes, one precision at a time
            jobs += [Job(name, chw, precision) for precision in args.precisions]
        else:
            mine = [e for e in entries if runtime_of(e["target"]) == name]
            for e in mine:
                extra = {"artifact": e["path"], "artifact_precision": e.get("precision")}
                shape = tuple(e["input_shape"][1:])
                path = resolve_artifact(args.artifacts, e)  # checked by read_verified_manifest
                jobs.append(Job(name, shape, str(e.get("precision")), path, extra))
            if not mine:
                why = f"no {target_of(name)} artifact in {args.artifacts}/manifest.json"
                jobs.append(Job(name, chw, skip=why))
    return [j for job in jobs for j in _per_ov_precision(job, args.ov_precision)]


def _per_ov_precision(job: Job, ov_precisions: list[str] | None) -> list[Job]:
    """A job once per execution precision asked for, where its runtime takes one (the
    artifact's own if none)."""
    spec = spec_for_runtime(job.runtime)
    if spec is None or not spec.execution_precisions or not ov_precisions:
        return [job]
    return [
        Job(job.name, job.input_chw, job.precision, job.artifact, dict(job.extra), job.skip, p)
        for p in ov_precisions
    ]


def _runner_options(job: Job, threads: int | None) -> dict[str, Any]:
    """Each runtime as its users run it: with its defaults (thread spinning included: one
    runtime runs at a time here), at the execution precision asked for, else as the artifact
    needs (its spec's ``artifact_runner_options``)."""
    options: dict[str, Any] = {"threads": threads} if threads else {}
    spec = spec_for_runtime(job.runtime)
    if spec is not None and spec.execution_precisions:
        options |= spec.artifact_runner_options(job.precision, {})
        if job.ov_precision:
            options["precision"] = job.ov_precision
    return options


def precision_label(artifact: str, computed: str) -> str:
    """'fp16', or 'fp32 as bf16' where the runtime computed otherwise than the artifact
    says (int8 artifacts run their unquantized ops in fp32 unless said otherwise)."""
    if computed == artifact or (artifact == "int8" and computed == "fp32"):
        return artifact
    return f"{artifact} as {computed}"


def _prepare(run: Run, job: Job) -> tuple[Any, dict[str, Any]]:
    """The job's artifact: reparameterized or exported now, so only one exists at a time."""
    if job.name == TORCH_INFERENCE:
        from partialnet import reparameterize

        return reparameterize(job.artifact, job.input_chw[1:]), {"form": "inference"}
    if job.artifact is not None or job.runtime is Runtime.TORCH:
        return job.artifact, job.extra or {"form": "eager"}
    try:
        from partialnet.export import export
    except ImportError as exc:
        raise _Skip(
            f"timing {job.name} from --variant needs partialnet.export.export ({exc}); "
            "export with partialnet-export and pass --artifacts DIR"
        ) from exc
    target, batch = target_of(job.name), max(run.args.batch)
    out = run.tmp / f"{job.name}-{job.precision}"
    dynamic = (1, batch, batch) if batch > 1 else None  # so that every requested batch fits
    fixed = {}
    if not spec_of(target).dynamic_batch:  # a fixed-batch target: the smallest batch
        dynamic, fixed = None, {"batch": min(run.args.batch)}
    hw = tuple(job.input_chw[1:])  # verify=False: checking parity is `parity`'s job, not ours
    export(
        run.model,
        targets=[target],
        precision=job.precision,
        output_dir=out,
        imgsz=hw,
        dynamic_batch=dynamic,
        verify=False,
        **fixed,
        **(
            {"calibration_data": run.args.calibration_data}
            if needs_calibration(job.precision)
            else {}
        ),
    )
    for e in read_verified_manifest(out)["artifacts"]:
        if e["target"] == target:
            return resolve_artifact(out, e), {
                "artifact": e["path"],
                "artifact_precision": e["precision"],
            }
    raise _Skip(f"partialnet.export.export wrote no {target} artifact")


def _run_job(run: Run, job: Job, peaks: PeakGemm, progress: ProgressLine) -> None:
    """Prepare, open the job's runner, measure every batch, close; failures become skips."""
    args, cells, reason = run.args, [], ""
    timing = {"warmup": args.warmup, "iterations": args.iterations, "duration": args.duration}
    try:
        if job.skip:
            raise _Skip(job.skip)
        artifact, extra = _prepare(run, job)
        peak = peaks.get(job.runtime.value)  # before the runner opens: one thing at a time
        rss_before = current_rss_mb()
        options = _runner_options(job, args.threads)
        with run.open_runner(job.runtime, artifact, **options) as runner:
            info = runner.info()
            run.runners[f"{job.name}/{job.precision}/{info.precision}"] = info.to_dict()
            extra |= {"threads": args.threads, "device": info.device, "provider": info.provider}
            extra |= {"artifact_precision": job.precision, "computed_in": info.precision}
            if "allow_spinning" in info.extra:
                extra["spinning"] = info.extra["allow_spinning"]
            chw = job.input_chw
            for c in measure_runner(runner, args.batch, chw, progress, job.name, **timing):
                key = (
                    job.name,
                    run.variant,
                    precision_label(job.precision, info.precision),
                    c.batch,
                )
                if c.measurement is None:
                    cells.append(skipped_cell(*key, c.skipped or "", **extra))
                    continue
                run.samples[key] = c.measurement.samples_ms
                mem = c.peak_memory_mb or 0.0
                cell = measured_cell(*key, c.measurement, run.flops_per_image, peak, mem, **extra)
                memory = {"memory_method": c.memory_method, "memory_delta_mb": mem - rss_before}
                cells.append(cell | memory | {"input_shape": [c.batch, *chw]})
    except (_Skip, RuntimeUnavailableError, MissingDependencyError) as exc:
        reason = str(exc)
    except Exception as exc:  # a bug or a broken artifact: reported, and the exit code is 1
        reason = f"failed: {type(exc).__name__}: {exc}"
        run.failed = True
        print(f"{PROG}: {job.name}: {reason}", file=sys.stderr)
    run.results += cells
    for batch in args.batch[len(cells) :]:
        run.results.append(skipped_cell(job.name, run.variant, job.precision, batch, reason))


def _latency(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.duration is None:
        args.iterations = args.iterations or 50
    other = load_json(args.compare) if args.compare else None
    import partialnet

    manifest = read_verified_manifest(args.artifacts) if args.artifacts else None
    if manifest and (selection := format_selection(manifest["artifacts"])):
        print(selection)
    variant = str(manifest.get("variant")) if manifest else args.variant
    no_model = None
    if manifest is not None and importlib.util.find_spec("torch") is None:
        # A device install (numpy and one runtime): the artifacts alone are timed.
        model, no_model = None, "torch is not installed here"
    else:
        try:
            model = partialnet.create_model(variant).eval()
            variant = model.cfg.name
        except UsageError:
            if manifest is None:
                raise
            model = None  # not a registered variant: no torch runs, no FLOP count
    available_runtimes, open_runner = _registry()
    env = collect_environment(args.threads, [PROG, *argv])
    peaks, progress = PeakGemm(args.threads, size=args.peak_gemm), ProgressLine()
    jobs = _jobs(args, manifest, model, no_model)
    hw = jobs[0].input_chw[1:] if jobs else (224, 224)
    flops = 2 * partialnet.complexity(model, hw).macs if model is not None else None
    availability = available_runtimes()
    with tempfile.TemporaryDirectory(prefix="partialnet-bench-") as tmp:
        run = Run(args, variant, model, flops, Path(tmp), open_runner)
        for job in jobs:
            job.skip = job.skip or availability.get(job.runtime.value, "not registered")
            _run_job(run, job, peaks, progress)
            gc.collect()  # the previous runner is gone before the next one opens
    timing = {"warmup": args.warmup, "iterations": args.iterations, "duration_s": args.duration}
    env.update(runners=run.runners, peak_gemm=peaks.to_dict(), flops_per_image=flops)
    env.update(artifacts=manifest["artifacts"] if manifest else "exported by the bench")
    env.update(timing=timing, clock="time.perf_counter around each infer", memory=PeakMemory.NOTE)
    report = {"environment": env, "results": run.results}
    write_report(report, args.output)
    if importlib.util.find_spec("matplotlib") is None:  # a device install: tables only
        print(f"wrote report.json, report.md to {args.output} (no plots: matplotlib missing)")
    else:
        plot_latency(run.samples, args.output / "latency.png")
        plot_throughput(run.results, args.output / "throughput.png")
        print(f"wrote report.json, report.md, latency.png, throughput.png to {args.output}")
    if other is not None:
        comparison = compare_reports(report, other)
        print(format_comparison(comparison, str(args.output), str(args.compare)), end="")
    return 1 if run.failed else 0


def _registry() -> tuple[Callable[[], dict[str, str | None]], Callable[..., Any]]:
    from partialnet.runtimes import available_runtimes, open_runner

    return available_runtimes, open_runner


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere: the traceback of a failure is printed (as PARTIALNET_DEBUG=1 does).
    # A subcommand gets it too: it guards its own failures.
    debug = "--debug" in argv
    stopped = "interrupted; partial results were discarded"
    if argv and argv[0] in SUBCOMMANDS:
        return run_guarded(
            PROG, lambda: _subcommand(argv[0], argv[1:]), debug=debug, interrupted=stopped
        )
    argv = [a for a in argv if a != "--debug"]
    latency = argv[1:] if argv[:1] == ["latency"] else argv
    return run_guarded(PROG, lambda: _latency(latency), debug=debug, interrupted=stopped)


def _subcommand(name: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(SUBCOMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name != SUBCOMMANDS[name]:
            raise
        raise UsageError(f"the '{name}' subcommand is not installed in this version") from None
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())
