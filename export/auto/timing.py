"""Timing ``--precision auto``'s candidates: one runtime at a time, at batch 1, with the
runtime's default threading, best median of alternated rounds."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import numpy as np

from partialnet.export.auto.candidates import Candidate
from partialnet.export.options import Target
from partialnet.export.targets import spec_of

WARMUP_RUNS = 10
TIMED_RUNS = 50
ROUNDS = 3  # best median of 3 alternated rounds: a shared machine's load drifts meanwhile


def time_candidates(target: Target, candidates: list[Candidate]) -> list[float]:
    """Each candidate's best median ms at batch 1 over ``ROUNDS`` alternated rounds, with the
    runtime's default threading; one runner runs at a time, each opened once."""
    from partialnet.runtimes import open_runner

    spec = spec_of(target)
    best = [float("inf")] * len(candidates)
    with contextlib.ExitStack() as stack:
        runners = []
        for c in candidates:
            assert c.record is not None and c.directory is not None
            # What the record says it runs as (the bf16 candidate: its fp32 IR in bf16).
            options = spec.artifact_runner_options(c.record.precision, c.record.details)
            path = c.directory / c.record.path
            runners.append(stack.enter_context(open_runner(spec.runtime, path, **options)))
        for _ in range(ROUNDS):  # rounds alternate the candidates: the load drifts meanwhile
            for i, (c, runner) in enumerate(zip(candidates, runners, strict=True)):
                ms = _median_ms(runner, c.record.input_shape)  # type: ignore[union-attr]
                best[i] = min(best[i], ms)
    return best


def _median_ms(runner: Any, input_shape: list[int]) -> float:
    """Median ms of ``TIMED_RUNS`` runs at batch 1 after ``WARMUP_RUNS`` (the warm-up also
    lets the previously timed runner's pool go idle)."""
    x = np.random.default_rng(0).standard_normal((1, *input_shape[1:]), dtype=np.float32)
    for _ in range(WARMUP_RUNS):
        runner.infer(x)
    times = []
    for _ in range(TIMED_RUNS):
        t = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
