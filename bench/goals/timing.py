"""The goal scripts' timing: one runner's p50, and the best p50 of sides measured in
alternation. Torch-free, so a subprocess that must not load torch (the capped-ISA worker)
times exactly as the goal scripts do."""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np

from partialnet.bench.perf.measure import measure
from partialnet.runtimes import open_runner


def p50_ms(call: Callable[[], object], iterations: int) -> float:
    return measure(call, warmup=5, iterations=iterations).stats.p50


def runner_p50(runtime: str, artifact, batch: int, threads: int, iterations: int) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    with open_runner(runtime, artifact, threads=threads) as runner:
        result = p50_ms(lambda: runner.infer(x), iterations)
    gc.collect()
    return result


def best_p50(
    candidates: dict[str, tuple[str, object]],
    batch: int,
    threads: int,
    iterations: int,
    rounds: int = 3,
) -> dict[str, float]:
    """Best p50 of each candidate over ``rounds`` rounds that alternate between them, so a
    burst of load on this shared machine does not land on one side of a comparison only."""
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, (runtime, artifact) in candidates.items():
            best[name] = min(best[name], runner_p50(runtime, artifact, batch, threads, iterations))
    return best
