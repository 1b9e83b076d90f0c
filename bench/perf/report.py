"""report.json (the schema below) and report.md (the same numbers as tables a person reads).

report.json is ``{"environment": {...}, "results": [cell, ...]}``. Every cell has
``runtime, variant, precision, batch, latency_ms{min,mean,std,p50,p90,p99,max},
throughput_ips, gflops_per_s, peak_fraction, peak_memory_mb, skipped``. A measured cell has
``skipped: null`` and numbers (``gflops_per_s``/``peak_fraction`` may be null when the FLOP
count or the runtime's GEMM peak is unknown); a skipped cell has the reason in ``skipped``
and nulls for every number. Extra keys (iterations, threads, flops_per_image, ...) may follow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from partialnet.bench.perf.measure import Measurement
from partialnet.errors import UsageError

LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p99", "max")
CELL_KEY = ("runtime", "variant", "precision", "batch")
REQUIRED = {
    "runtime": str,
    "variant": str,
    "precision": str,
    "batch": int,
    "latency_ms": dict,
    "throughput_ips": float,
    "gflops_per_s": float,
    "peak_fraction": float,
    "peak_memory_mb": float,
    "skipped": str,
}
NULLABLE_WHEN_MEASURED = {"gflops_per_s", "peak_fraction", "skipped"}


class ReportError(UsageError, ValueError):
    """A report.json that cannot be read or does not follow the schema."""


def cell_key(cell: dict[str, Any]) -> tuple[str, str, str, int]:
    return (cell["runtime"], cell["variant"], cell["precision"], cell["batch"])


def measured_cell(
    runtime: str,
    variant: str,
    precision: str,
    batch: int,
    m: Measurement,
    flops_per_image: float | None,
    peak_gflops: float | None,
    peak_memory_mb: float,
    **extra: Any,
) -> dict[str, Any]:
    """A measured cell: throughput = batch / mean; GFLOP/s = flops * batch / mean."""
    mean_s = m.stats.mean / 1e3
    gflops = flops_per_image * batch / mean_s / 1e9 if flops_per_image else None
    fraction = gflops / peak_gflops if gflops is not None and peak_gflops else None
    return {
        "runtime": runtime,
        "variant": variant,
        "precision": precision,
        "batch": batch,
        "latency_ms": m.stats.to_dict(),
        "throughput_ips": m.throughput(batch),
        "gflops_per_s": gflops,
        "peak_fraction": fraction,
        "peak_memory_mb": float(peak_memory_mb),
        "skipped": None,
        "iterations": m.iterations,
        "warmup": m.warmup,
        "flops_per_image": flops_per_image,
        "peak_gflops_per_s": peak_gflops,
        **extra,
    }


def skipped_cell(
    runtime: str, variant: str, precision: str, batch: int, reason: str, **extra: Any
) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "variant": variant,
        "precision": precision,
        "batch": batch,
        "latency_ms": dict.fromkeys(LATENCY_KEYS),
        "throughput_ips": None,
        "gflops_per_s": None,
        "peak_fraction": None,
        "peak_memory_mb": None,
        "skipped": reason,
        **extra,
    }


def validate(report: Any) -> list[str]:
    """Every way ``report`` departs from the schema; empty when it conforms."""
    if not isinstance(report, dict) or set(report) != {"environment", "results"}:
        return ["top level must be an object with exactly 'environment' and 'results'"]
    problems = []
    if not isinstance(report["environment"], dict):
        problems.append("environment must be an object")
    if not isinstance(report["results"], list):
        return [*problems, "results must be a list"]
    for i, cell in enumerate(report["results"]):
        problems += [f"results[{i}]: {p}" for p in _cell_problems(cell)]
    return problems


def _cell_problems(cell: Any) -> list[str]:
    if not isinstance(cell, dict):
        return ["not an object"]
    missing = [k for k in REQUIRED if k not in cell]
    if missing:
        return [f"missing {missing}"]
    skipped = cell["skipped"] is not None
    problems = []
    for key, kind in REQUIRED.items():
        value = cell[key]
        nullable = skipped or key in NULLABLE_WHEN_MEASURED
        if key == "latency_ms":
            problems += _latency_problems(value, skipped)
        elif value is None:
            if not nullable:
                problems.append(f"{key} is null in a measured cell")
        elif not _is(value, kind):
            problems.append(f"{key} should be {kind.__name__}, got {type(value).__name__}")
        elif skipped and key in ("throughput_ips", "peak_memory_mb"):
            problems.append(f"{key} should be null in a skipped cell")
    return problems


def _latency_problems(latency: Any, skipped: bool) -> list[str]:
    if not isinstance(latency, dict) or set(latency) != set(LATENCY_KEYS):
        return [f"latency_ms must have exactly {list(LATENCY_KEYS)}"]
    if skipped:
        return [] if all(v is None for v in latency.values()) else ["latency of a skipped cell"]
    if not all(_is(v, float) for v in latency.values()):
        return ["latency_ms values must be numbers"]
    if not latency["min"] <= latency["p50"] <= latency["max"]:
        return ["latency_ms p50 is not between min and max"]
    return []


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def write_json(report: dict[str, Any], path: Path) -> None:
    problems = validate(report)
    if problems:  # a bug in the bench, not the user's doing
        raise ValueError("report does not follow its schema: " + "; ".join(problems))
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def write_report(report: dict[str, Any], directory: Path) -> None:
    """report.json and report.md into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_json(report, directory / "report.json")
    write_markdown(report, directory / "report.md")


def load_json(path: Path) -> dict[str, Any]:
    """A report.json, checked against the schema (ValueError says what is wrong)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read report {path}: {exc}") from exc
    problems = validate(report)
    if problems:
        raise ReportError(f"{path} is not a partialnet-bench report: {problems[0]}")
    return report


# --- Markdown ------------------------------------------------------------------------------

_COLUMNS = (
    "runtime",
    "variant",
    "precision",
    "batch",
    "p50 ms",
    "mean ms",
    "std ms",
    "p90 ms",
    "p99 ms",
    "min ms",
    "max ms",
    "img/s",
    "GFLOP/s",
    "% of GEMM peak",
    "peak RSS MB",
    "note",
)


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_row(cell: dict[str, Any]) -> str:
    lat = cell["latency_ms"]
    fraction = cell["peak_fraction"]
    values = [
        cell["runtime"],
        cell["variant"],
        cell["precision"],
        str(cell["batch"]),
        *(_num(lat[k], 3) for k in ("p50", "mean", "std", "p90", "p99", "min", "max")),
        _num(cell["throughput_ips"], 1),
        _num(cell["gflops_per_s"], 1),
        _num(None if fraction is None else 100 * fraction, 1),
        _num(cell["peak_memory_mb"], 0),
        f"skipped: {cell['skipped']}" if cell["skipped"] else "",
    ]
    return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys: {"packages": {"torch": "2.13"}} -> packages.torch."""
    if not isinstance(value, dict) or not value:
        return [(prefix, value)]
    return [kv for k, v in value.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else k)]


def _environment_lines(env: dict[str, Any]) -> list[str]:
    lines = ["| key | value |", "| --- | --- |"]
    for key, value in _flatten(env):
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        lines.append(f"| {key} | {'-' if value is None else str(value).replace('|', '/')} |")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    cells = report["results"]
    lines = [
        "# PartialNet latency benchmark",
        "",
        "One row per (runtime, variant, precision, batch). Latencies exclude warmup; img/s is "
        "batch / mean latency; GFLOP/s counts 2 x MACs of the eager model per image; "
        "'% of GEMM peak' divides it by the GFLOP/s the same runtime reaches on a large fp32 "
        "matmul in this run; peak RSS is the whole process's resident high-water mark while "
        "the cell ran.",
        "",
        "## Results",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in _COLUMNS) + " |",
        *(markdown_row(c) for c in cells),
        "",
        "## Environment",
        "",
        *_environment_lines(report["environment"]),
        "",
    ]
    return "\n".join(lines)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    path.write_text(to_markdown(report))
