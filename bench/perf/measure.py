"""Measuring: the timing loop (warmup, then ``perf_counter`` around each call), its summary,
the peak memory of a cell, a runner measured batch by batch, and the progress line."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import IO

import numpy as np

from partialnet.runtimes.base import Runner

Clock = Callable[[], float]
ProgressCallback = Callable[[int, int | None, float], None]  # (done, total or None, elapsed s)

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call. ``std`` is the sample standard deviation (ddof=1; 0 for n=1);
    percentiles interpolate linearly between the sorted samples (numpy's default)."""

    min: float
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray) -> LatencyStats:
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples to summarize")
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        std = float(s.std(ddof=1)) if s.size > 1 else 0.0
        return cls(
            float(s.min()), float(s.mean()), std, float(p50), float(p90), float(p99), float(s.max())
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """Per-iteration latencies of one cell (warmup excluded) and their summary."""

    samples_ms: tuple[float, ...]
    stats: LatencyStats
    warmup: int

    @property
    def iterations(self) -> int:
        return len(self.samples_ms)

    def throughput(self, batch: int) -> float:
        """Images per second: batch / mean latency."""
        return batch / (self.stats.mean / 1e3)


def measure(
    call: Callable[[], object],
    *,
    warmup: int = 5,
    iterations: int | None = None,
    duration: float | None = None,
    clock: Clock = time.perf_counter,
    progress: ProgressCallback | None = None,
) -> Measurement:
    """Time ``call`` after ``warmup`` untimed calls.

    Runs ``iterations`` timed calls, or, with ``duration`` (seconds), as many as fit (at
    least one). Only the call itself sits between the two clock reads; the stop condition
    reuses the end time of the previous call, so the clock is read exactly twice per call.
    """
    if (iterations is None) == (duration is None):
        raise ValueError("give exactly one of iterations or duration")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = end = clock()
    while True:
        t0 = clock()
        call()
        end = clock()
        samples.append((end - t0) * 1e3)
        if progress is not None:
            progress(len(samples), iterations, end - start)
        if iterations is not None and len(samples) >= iterations:
            break
        if duration is not None and end - start >= duration:
            break
    return Measurement(tuple(samples), LatencyStats.from_samples(samples), warmup)


def current_rss_mb() -> float:
    """This process's resident set (MB): psutil where installed, else /proc (Linux)."""
    try:
        import psutil
    except ImportError:  # a bare device: numpy and one runtime
        return _read_status_mb("VmRSS:") or 0.0
    return psutil.Process().memory_info().rss / 2**20


def _read_status_mb(field: str) -> float | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _read_vmhwm_mb() -> float | None:
    return _read_status_mb("VmHWM:")


def _reset_vmhwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")  # "5" resets the peak-RSS counter only (Linux >= 4.0)
    except OSError:
        return False
    return _read_vmhwm_mb() is not None


class PeakMemory:
    """Peak resident set size (MB) of this process while the block runs.

    On Linux the kernel's own high-water mark (``VmHWM``) is reset on entry and read on exit,
    so no transient peak is missed. Elsewhere a thread samples psutil's RSS every
    ``interval`` seconds (plus on entry and exit): a lower bound of the true peak.
    ``method`` says which one ran. Either way the figure is the whole process's RSS
    (interpreter, torch, every loaded library), not the model alone.
    """

    NOTE = (
        "peak_memory_mb: this process's resident-set high-water mark during the cell's timed "
        "loop (Linux VmHWM reset per cell, else psutil sampled every 10 ms); memory_delta_mb: "
        "that minus the RSS before the runner opened"
    )

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_mb: float = 0.0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if _reset_vmhwm():
            self.method = "vmhwm"
            return self
        self.method = "psutil-sampled"
        self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __exit__(self, *exc: object) -> None:
        if self.method == "vmhwm":
            self.peak_mb = _read_vmhwm_mb() or 0.0
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


class ProgressLine:
    """One updating line on stderr per cell; plain start/end lines when it is not a TTY.

    Redraws at most ``every`` seconds so that printing stays out of the timing's way.
    """

    def __init__(self, stream: IO[str] | None = None, every: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._label = ""
        self._last = 0.0

    def start(self, label: str) -> None:
        self._label = label
        self._last = 0.0
        if not self.tty:
            self._write(f"{label}: running\n")

    def update(self, done: int, total: int | None, elapsed: float) -> None:
        if not self.tty or (elapsed - self._last < self.every and done != total):
            return
        self._last = elapsed
        count = f"iteration {done}/{total}" if total else f"iteration {done} ({elapsed:.1f} s)"
        self._write(f"\r\x1b[2K{self._label}: {count}")

    def finish(self, summary: str) -> None:
        prefix = "\r\x1b[2K" if self.tty else ""
        self._write(f"{prefix}{self._label}: {summary}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


@dataclass(frozen=True)
class Cell:
    """One batch size on one open runner: a measurement, or the reason there is none."""

    batch: int
    measurement: Measurement | None = None
    skipped: str | None = None
    peak_memory_mb: float | None = None
    memory_method: str = ""


def measure_runner(
    runner: Runner,
    batches: list[int],
    input_chw: tuple[int, ...],
    progress: ProgressLine | None = None,
    label: str = "",
    *,
    warmup: int,
    iterations: int | None,
    duration: float | None,
) -> Iterator[Cell]:
    """Measure an activated runner at each batch size in turn, on a fixed random input.

    A batch outside the runner's ``batch_range`` (a static or profiled artifact) is skipped.
    """
    info = runner.info()
    lo, hi = info.batch_range
    for batch in batches:
        if not lo <= batch <= hi:
            yield Cell(batch, skipped=f"batch {batch} outside the artifact's range {lo}..{hi}")
            continue
        x = np.random.default_rng(0).standard_normal((batch, *input_chw), dtype=np.float32)
        if progress is not None:
            progress.start(f"{label or info.runtime} {info.precision} batch {batch}")
        with PeakMemory() as mem:
            m = measure(
                lambda x=x: runner.infer(x),
                warmup=warmup,
                iterations=iterations,
                duration=duration,
                progress=progress.update if progress else None,
            )
        if progress is not None:
            progress.finish(f"p50 {m.stats.p50:.3f} ms, {m.throughput(batch):.1f} img/s")
        yield Cell(batch, m, peak_memory_mb=mem.peak_mb, memory_method=mem.method)
