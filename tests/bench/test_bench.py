"""partialnet-bench: timing statistics, report schema, Markdown, plots, --compare, CLI errors.

Nothing here asserts a speed: timings are checked for consistency (counts, ordering, the
formulas that turn them into throughput), never against a threshold.
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from partialnet.bench import cli
from partialnet.bench.environment import PeakGemm, collect_environment
from partialnet.bench.perf.compare import compare_reports, format_comparison
from partialnet.bench.perf.measure import (
    LatencyStats,
    Measurement,
    PeakMemory,
    ProgressLine,
    current_rss_mb,
    measure,
    measure_runner,
)
from partialnet.bench.perf.plots import plot_latency, plot_throughput
from partialnet.bench.perf.report import (
    LATENCY_KEYS,
    REQUIRED,
    measured_cell,
    skipped_cell,
    to_markdown,
    validate,
    write_report,
)
from partialnet.export.output.files import sha256_path
from partialnet.runtimes.base import Runner, RunnerInfo, Runtime

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    """Each call returns the next time; ``durations`` are the lengths of the timed calls."""

    def __init__(self, durations: list[float], gap: float = 0.001) -> None:
        t = 0.0
        self.times = [t]  # measure reads the start once, then (t0, t1) around each call
        for d in durations:
            t += gap
            self.times.append(t)
            t += d
            self.times.append(t)
        self.i = 0

    def __call__(self) -> float:
        self.i += 1
        return self.times[self.i - 1]


class MatmulRunner(Runner):
    """A real (tiny) runner: flattens the NCHW batch and multiplies by a weight matrix."""

    name = "numpy-matmul"

    def __init__(
        self,
        weights: Path | np.ndarray,
        batch_range: tuple[int, int] = (1, 8),
        runtime: str = "onnxruntime",
        threads: int | None = None,
        log: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.source, self.batch_range, self.runtime = weights, batch_range, runtime
        self.threads, self.log = threads, log if log is not None else []
        self.w: np.ndarray | None = None

    def _activate(self) -> None:
        src = self.source
        self.w = np.load(src) if isinstance(src, Path) else np.asarray(src, np.float32)
        self.log.append(f"open {self.runtime}")

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._active and self.w is not None
        return {"logits": batch.reshape(len(batch), -1) @ self.w}

    def _info(self) -> RunnerInfo:
        return RunnerInfo(
            self.runtime,
            np.__version__,
            "cpu",
            "fp32",
            "numpy",
            (-1, 3, 8, 8),
            self.batch_range,
            {"threads": self.threads},
        )

    def _deactivate(self) -> None:
        self.w = None
        self.log.append(f"close {self.runtime}")


# --- the timing loop --------------------------------------------------------------------------


def test_measure_statistics_on_a_fake_clock() -> None:
    durations = [0.010, 0.030, 0.020, 0.050, 0.040]
    calls = []
    m = measure(lambda: calls.append(1), warmup=3, iterations=5, clock=FakeClock(durations))
    assert len(calls) == 3 + 5  # warmup calls happen but are not timed
    assert m.iterations == 5 and m.warmup == 3
    assert m.samples_ms == pytest.approx([d * 1e3 for d in durations])
    s = m.stats
    assert s.min == pytest.approx(10) and s.max == pytest.approx(50)
    assert s.mean == pytest.approx(30) and s.p50 == pytest.approx(30)
    assert s.std == pytest.approx(np.std([10, 30, 20, 50, 40], ddof=1))
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert m.throughput(8) == pytest.approx(8 / (s.mean / 1e3))


def test_measure_duration_stops_once_the_time_is_used() -> None:
    # Each timed call takes 0.1 s plus 1 ms between calls: 1.0 s is reached after 10 calls.
    m = measure(lambda: None, warmup=0, duration=1.0, clock=FakeClock([0.1] * 50))
    assert m.iterations == 10
    assert m.stats.mean == pytest.approx(100)


def test_measure_refuses_bad_counts() -> None:
    with pytest.raises(ValueError):
        measure(lambda: None, iterations=5, duration=1.0)
    with pytest.raises(ValueError):
        measure(lambda: None, iterations=0)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_measure_runner_on_a_real_runner_skips_batches_outside_its_range() -> None:
    w = np.random.default_rng(0).standard_normal((3 * 8 * 8, 10), dtype=np.float32)
    with MatmulRunner(w, batch_range=(1, 8)) as runner:
        cells = list(
            measure_runner(runner, [1, 4, 16], (3, 8, 8), warmup=1, iterations=7, duration=None)
        )
    assert [c.batch for c in cells] == [1, 4, 16]
    for c in cells[:2]:
        assert c.skipped is None and c.measurement is not None
        assert c.measurement.iterations == 7
        s = c.measurement.stats
        assert s.min <= s.p50 <= s.max and s.min > 0
        assert c.peak_memory_mb and c.peak_memory_mb > 0
    assert cells[2].measurement is None and "1..8" in (cells[2].skipped or "")


def test_peak_memory_sees_an_allocation_held_inside_the_block() -> None:
    before = current_rss_mb()
    with PeakMemory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, every page touched
    assert mem.method in ("vmhwm", "psutil-sampled")
    assert mem.peak_mb - before >= 48
    del block


def test_progress_line_updates_in_place_on_a_tty_and_prints_lines_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        p = ProgressLine(stream, every=0.0)
        p.start("torch fp32 batch 1")
        p.update(1, 2, 0.1)
        p.update(2, 2, 0.2)
        p.finish("p50 1.000 ms")
    assert "\r" in tty.getvalue() and "iteration 2/2" in tty.getvalue()
    assert "\r" not in plain.getvalue() and plain.getvalue().count("\n") == 2


def test_peak_gemm_measures_torch_and_records_why_there_is_no_reference() -> None:
    peaks = PeakGemm(threads=1, size=128, repeats=2)
    assert peaks.get("torch") > 0
    assert peaks.get("coreml") is None and "coreml" in peaks.errors
    assert PeakGemm(threads=1, size=0).get("torch") is None


# --- report -----------------------------------------------------------------------------------


def _measurement(durations_s: list[float]) -> Measurement:
    return measure(
        lambda: None, warmup=0, iterations=len(durations_s), clock=FakeClock(durations_s)
    )


def _report(p50_scale: float = 1.0) -> dict[str, Any]:
    m1 = _measurement([0.010 * p50_scale, 0.012 * p50_scale, 0.011 * p50_scale])
    m8 = _measurement([0.050 * p50_scale, 0.060 * p50_scale, 0.055 * p50_scale])
    results = [
        measured_cell("torch", "t0", "fp32", 1, m1, 4.6e8, 40.0, 512.0, threads=2),
        measured_cell("onnxruntime", "t0", "fp32", 8, m8, 4.6e8, None, 530.0),
        skipped_cell("tensorrt", "t0", "fp16", 1, "no NVIDIA GPU"),
    ]
    return {"environment": collect_environment(2, ["partialnet-bench"]), "results": results}


def test_report_schema_has_every_key_with_its_type() -> None:
    report = json.loads(json.dumps(_report()))  # as a reader of report.json sees it
    assert validate(report) == []
    assert set(report) == {"environment", "results"}
    for cell in report["results"]:
        assert set(REQUIRED) <= set(cell)
        assert set(cell["latency_ms"]) == set(LATENCY_KEYS)
    measured, no_peak, skipped = report["results"]
    assert isinstance(measured["batch"], int)
    assert all(isinstance(v, float) for v in measured["latency_ms"].values())
    mean_s = measured["latency_ms"]["mean"] / 1e3
    assert measured["throughput_ips"] == pytest.approx(1 / mean_s)
    assert measured["gflops_per_s"] == pytest.approx(4.6e8 / mean_s / 1e9)
    assert measured["peak_fraction"] == pytest.approx(measured["gflops_per_s"] / 40.0)
    assert no_peak["peak_fraction"] is None and no_peak["gflops_per_s"] > 0
    assert skipped["skipped"] == "no NVIDIA GPU" and skipped["throughput_ips"] is None
    env = report["environment"]
    for key in ("cpu_model", "physical_cores", "logical_cores", "os", "python", "threads"):
        assert key in env
    assert {"torch", "onnxruntime", "openvino", "numpy", "partialnet-export"} <= set(
        env["packages"]
    )


def test_validate_names_what_is_wrong() -> None:
    report = _report()
    del report["results"][0]["throughput_ips"]
    report["results"][1]["batch"] = "8"
    problems = validate(report)
    assert any("results[0]" in p and "throughput_ips" in p for p in problems)
    assert any("results[1]" in p and "batch" in p for p in problems)
    assert validate({"results": []}) != []


def test_markdown_has_a_table_row_per_cell(tmp_path: Path) -> None:
    report = _report()
    write_report(report, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert md == to_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ") and " t0 " in line]
    assert len(rows) == len(report["results"])
    assert any("no NVIDIA GPU" in r for r in rows)
    assert "## Environment" in md and "packages.torch" in md
    assert validate(json.loads((tmp_path / "out" / "report.json").read_text())) == []


def test_plots_are_png_files(tmp_path: Path) -> None:
    report = _report()
    samples = {
        ("torch", "t0", "fp32", 1): [10.0, 12.0, 11.0],
        ("onnxruntime", "t0", "fp32", 8): [50.0, 60.0, 55.0],
    }
    for path in (
        plot_latency(samples, tmp_path / "latency.png"),
        plot_throughput(report["results"], tmp_path / "throughput.png"),
        plot_latency({}, tmp_path / "empty.png"),
    ):
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


# --- compare ----------------------------------------------------------------------------------


def test_compare_ratios_come_from_the_two_reports() -> None:
    this, other = _report(1.0), _report(2.0)
    other["results"][0]["runtime"] = "openvino"  # now only in other; torch only in this
    comparison = compare_reports(this, other)
    [ratio] = comparison.ratios
    mine, theirs = this["results"][1], other["results"][1]
    assert ratio.key == ("onnxruntime", "t0", "fp32", 8)
    expected_p50 = mine["latency_ms"]["p50"] / theirs["latency_ms"]["p50"]
    expected_tp = mine["throughput_ips"] / theirs["throughput_ips"]
    assert ratio.p50_ratio == pytest.approx(expected_p50)
    assert ratio.throughput_ratio == pytest.approx(expected_tp)
    assert comparison.only_this == [("torch", "t0", "fp32", 1)]
    assert comparison.only_other == [("openvino", "t0", "fp32", 1)]
    assert [k for k, _ in comparison.not_comparable] == [("tensorrt", "t0", "fp16", 1)]
    text = format_comparison(comparison, "new", "old")
    assert f"{expected_p50:.3f}" in text and f"{expected_tp:.3f}" in text
    assert "only in new: torch t0 fp32 batch 1" in text
    assert "only in old: openvino t0 fp32 batch 1" in text


# --- the command line -------------------------------------------------------------------------


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variant", "t0", "--runtimes", "torch,tensorflow"], "valid runtimes: torch"),
        (["--variant", "t0", "--batch", "1,x"], "--batch"),
        (["--variant", "t0", "--batch", "0"], "--batch"),
        (["--variant", "t0", "--iterations", "3", "--duration", "1"], "not allowed"),
        ([], "--variant"),
        (["--artifacts", "/nonexistent/partialnet-export-dir"], "not found"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert message in _error_line(capsys)


def test_directory_without_manifest_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--artifacts", str(tmp_path)]) == 2
    assert "manifest.json" in _error_line(capsys)


def _artifacts(tmp_path: Path, batch_range: tuple[int, int] = (1, 4)) -> Path:
    """An export directory whose 'onnx' artifact is a weight matrix MatmulRunner loads."""
    out = tmp_path / "export"
    out.mkdir()
    w = np.random.default_rng(0).standard_normal((3 * 8 * 8, 10)).astype(np.float32)
    np.save(out / "model.npy", w)
    entry = {
        "target": "onnx",
        "path": "model.npy",
        "precision": "fp32",
        "input_shape": [1, 3, 8, 8],
        "dynamic_batch": list(batch_range),
        "sha256": sha256_path(out / "model.npy"),
        "bytes": w.nbytes,
    }
    manifest = {"artifacts": [entry, entry | {"target": "openvino"}], "variant": "tiny-custom"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_manifest_that_does_not_match_its_files_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _artifacts(tmp_path)
    np.save(out / "model.npy", np.zeros((3 * 8 * 8, 10), np.float32))  # changed after export
    assert cli.main(["--artifacts", str(out)]) == 2
    assert "manifest does not match its files: model.npy" in _error_line(capsys)


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """onnxruntime opens MatmulRunner on the artifact; openvino 'cannot run here'."""
    log: list[str] = []

    def open_runner(runtime: Runtime, artifact: Path, threads: int | None = None) -> Runner:
        return MatmulRunner(Path(artifact), (1, 4), str(runtime.value), threads, log)

    def available() -> dict[str, str | None]:
        return {
            "torch": None,
            "onnxruntime": None,
            "openvino": "OpenVINO is not installed",
            "tensorrt": "no NVIDIA GPU",
            "coreml": "needs macOS",
        }

    monkeypatch.setattr(cli, "_registry", lambda: (available, open_runner))
    return log


def test_artifacts_run_skips_what_cannot_run_and_still_reports(
    tmp_path: Path, fake_registry: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _artifacts(tmp_path)
    argv = [
        "--artifacts",
        str(out),
        "--runtimes",
        "onnxruntime,openvino",
        "--batch",
        "1,2,8",
        "--iterations",
        "4",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--peak-gemm",
        "0",
        "--output",
        str(tmp_path / "run1"),
    ]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "run1" / "report.json").read_text())
    assert validate(report) == []
    cells = {(c["runtime"], c["batch"]): c for c in report["results"]}
    assert len(cells) == 6
    for batch in (1, 2):
        cell = cells[("onnxruntime", batch)]
        assert cell["skipped"] is None and cell["iterations"] == 4 and cell["threads"] == 1
        assert cell["gflops_per_s"] is None  # 'tiny-custom' is no variant: no FLOP count
    assert "1..4" in cells[("onnxruntime", 8)]["skipped"]
    assert all(cells[("openvino", b)]["skipped"] == "OpenVINO is not installed" for b in (1, 2, 8))
    assert fake_registry == ["open onnxruntime", "close onnxruntime"]
    for name in ("report.md", "latency.png", "throughput.png"):
        assert (tmp_path / "run1" / name).stat().st_size > 0

    # Run again and compare with the first: same cells, ratios printed.
    capsys.readouterr()
    argv[-1] = str(tmp_path / "run2")
    assert cli.main([*argv, "--compare", str(tmp_path / "run1" / "report.json")]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime tiny-custom fp32 batch 2" in printed
    assert "not compared: openvino tiny-custom fp32 batch 1" in printed


def test_parity_is_dispatched_to_its_own_module(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    module = types.ModuleType("partialnet.bench.parity")
    module.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "partialnet.bench.parity", module)
    assert cli.main(["parity", "--variant", "t0"]) == 0
    assert seen == [["--variant", "t0"]]


def test_end_to_end_variant_t0_on_torch(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [
        "--variant",
        "t0",
        "--runtimes",
        "torch,torch-inference",
        "--batch",
        "1",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--peak-gemm",
        "256",
        "--output",
        str(out),
    ]
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert validate(report) == []
    by_runtime = {c["runtime"]: c for c in report["results"]}
    assert by_runtime["torch"]["skipped"] is None
    assert by_runtime["torch"]["iterations"] == 3
    assert by_runtime["torch"]["peak_fraction"] > 0
    assert by_runtime["torch"]["flops_per_image"] > 0
    # torch-inference is measured once partialnet.reparameterize works; never a crash.
    assert set(by_runtime) == {"torch", "torch-inference"}
    inference = by_runtime["torch-inference"]
    assert inference["skipped"] is None, inference["skipped"]
    assert inference["iterations"] == 3 and inference["batch"] == 1
    latency = inference["latency_ms"]
    assert latency["mean"] > 0 and latency["min"] <= latency["mean"] <= latency["max"]
    # throughput = batch / mean latency (stated in bench.perf.report.measured_cell)
    assert inference["throughput_ips"] == pytest.approx(1e3 / latency["mean"], rel=1e-6)
    assert inference["flops_per_image"] > 0 and inference["peak_fraction"] > 0
    assert "torch" in report["environment"]["peak_gemm"]["gflops_per_s"]
    for name in ("report.md", "latency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "latency.png").read_bytes()[:8] == PNG_MAGIC


def test_failures_are_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from partialnet.bench import cli as bench_cli
    from partialnet.bench import parity

    # Bad usage: a place nobody can create a directory in (root ignores permission bits).
    assert bench_cli.main(["parity", "--output", "/proc/partialnet-bench-test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the output directory" in err[0]

    def broken(*args, **kwargs):
        raise RuntimeError("an SDK failed\nwith a second line")

    monkeypatch.setattr(parity, "collect_environment", broken)
    argv = ["parity", "--variants", "t0", "--runtimes", "torch", "--output", str(tmp_path)]
    assert bench_cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: an SDK failed with a second line" in err[0]
    assert bench_cli.main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
