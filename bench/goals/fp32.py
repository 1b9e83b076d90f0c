"""The runtime performance goals, measured in one run on this machine and printed.

    python -m partialnet.bench.goals.fp32 [--threads 2] [--iterations 50]

1. t1, batch 1: the fastest CPU runtime on the exported inference form vs eager PyTorch
   (goal: >= 3x faster).
2. t0 and t1, batch 1, each CPU runtime: our artifact of the inference form vs the eager
   model exported directly with torch.onnx (goal: latency ratio <= 0.85).
3. batch 32: achieved GFLOP/s of the best runtime vs the GEMM peak that runtime reaches in
   the same run (goal: >= 60%).

Each runner is measured alone (opened, measured, closed); compared sides alternate over three
rounds and the best p50 of each is compared. Where a
goal is missed the line says by how much. Nothing here is a test: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

import partialnet
from partialnet.bench.environment import PeakGemm
from partialnet.bench.goals.timing import best_p50, runner_p50
from partialnet.bench.perf.baseline import export_eager_onnx
from partialnet.export import export
from partialnet.export.targets import TARGETS
from partialnet.machine import cpu_model, isa_summary

# The targets whose runtimes run on any CPU (parity's defaults): runtime -> its target.
CPU_TARGETS = {spec.runtime.value: spec.name for spec in TARGETS if spec.parity_default}
CPU_RUNTIMES = tuple(CPU_TARGETS)


def _artifacts(variant: str, tmp: Path, batch: int | None = None) -> dict[str, Path]:
    torch.manual_seed(0)
    model = partialnet.create_model(variant).eval()
    out = tmp / f"{variant}-{batch or 1}"
    kwargs = {"batch": batch} if batch else {}
    targets = ",".join(CPU_TARGETS.values())
    manifest = export(model, targets=targets, output_dir=out, verify=False, **kwargs)
    paths = {a.target: out / a.path for a in manifest.artifacts}
    paths["eager-onnx"] = export_eager_onnx(model, out / "eager.onnx", (224, 224), batch or 1)
    return paths


def goal_speedup(tmp: Path, threads: int, iterations: int) -> None:
    torch.manual_seed(0)
    eager = partialnet.create_model("t1").eval()
    fast = partialnet.reparameterize(eager)
    paths = _artifacts("t1", tmp)
    timings = best_p50(
        {
            "eager torch": ("torch", eager),
            "torch (inference form)": ("torch", fast),
            **{runtime: (runtime, paths[target]) for runtime, target in CPU_TARGETS.items()},
        },
        1,
        threads,
        iterations,
    )
    eager_ms = timings.pop("eager torch")
    candidates = timings
    best = min(candidates, key=candidates.get)
    speedup = eager_ms / candidates[best]
    print(
        f"1. t1 batch 1, {threads} threads: eager torch p50 {eager_ms:.2f} ms; "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in candidates.items())
    )
    verdict = "met" if speedup >= 3 else f"MISSED by {3 / speedup:.2f}x"
    print(f"   fastest: {best}, {speedup:.2f}x faster than eager (goal >= 3x: {verdict})")


def goal_vs_direct_export(tmp: Path, threads: int, iterations: int) -> None:
    for variant in ("t0", "t1"):
        paths = _artifacts(variant, tmp)
        for runtime in CPU_RUNTIMES:
            ours_path = paths[CPU_TARGETS[runtime]]
            timings = best_p50(
                {"ours": (runtime, ours_path), "direct": (runtime, paths["eager-onnx"])},
                1,
                threads,
                iterations,
            )
            ours, direct = timings["ours"], timings["direct"]
            ratio = ours / direct
            verdict = "met" if ratio <= 0.85 else f"MISSED by {ratio - 0.85:.2f}"
            print(
                f"2. {variant} {runtime:11} inference form {ours:.2f} ms vs eager direct "
                f"{direct:.2f} ms: ratio {ratio:.2f} (goal <= 0.85: {verdict})"
            )


def goal_gemm_fraction(tmp: Path, threads: int, iterations: int) -> None:
    paths = _artifacts("t1", tmp, batch=32)
    flops = 2 * partialnet.complexity(partialnet.create_model("t1")).macs * 32
    peaks = PeakGemm(threads)
    best = (0.0, "")
    for runtime in CPU_RUNTIMES:
        artifact = paths[CPU_TARGETS[runtime]]
        ms = runner_p50(runtime, artifact, 32, threads, max(5, iterations // 5))
        achieved = flops / (ms / 1e3) / 1e9
        peak = peaks.get(runtime)
        fraction = achieved / peak
        print(
            f"3. t1 batch 32 {runtime:11} {achieved:.1f} GFLOP/s of a {peak:.1f} GFLOP/s "
            f"GEMM peak: {fraction:.0%}"
        )
        best = max(best, (fraction, runtime))
    verdict = "met" if best[0] >= 0.6 else f"MISSED by {0.6 - best[0]:.0%} points"
    print(f"   best: {best[1]} at {best[0]:.0%} (goal >= 60%: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.goals.fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_model()} ({isa_summary()}), {args.threads} threads, load {load:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        goal_speedup(Path(tmp), args.threads, args.iterations)
        goal_vs_direct_export(Path(tmp), args.threads, args.iterations)
        goal_gemm_fraction(Path(tmp), args.threads, args.iterations)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
