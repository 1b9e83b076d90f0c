"""Compare two reports cell by cell: this/other ratios of p50 latency and of throughput."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from partialnet.bench.perf.report import cell_key

CellKey = tuple[str, str, str, int]


@dataclass(frozen=True)
class Ratio:
    key: CellKey
    p50_ms: tuple[float, float]  # (this, other)
    throughput_ips: tuple[float, float]

    @property
    def p50_ratio(self) -> float:
        """this / other p50 latency: below 1 means this run is faster."""
        return self.p50_ms[0] / self.p50_ms[1]

    @property
    def throughput_ratio(self) -> float:
        """this / other throughput: above 1 means this run is faster."""
        return self.throughput_ips[0] / self.throughput_ips[1]


@dataclass(frozen=True)
class Comparison:
    ratios: list[Ratio] = field(default_factory=list)
    only_this: list[CellKey] = field(default_factory=list)
    only_other: list[CellKey] = field(default_factory=list)
    # Present in both, but skipped in at least one: (key, why).
    not_comparable: list[tuple[CellKey, str]] = field(default_factory=list)


def compare_reports(this: dict[str, Any], other: dict[str, Any]) -> Comparison:
    """Match cells on (runtime, variant, precision, batch); the order of ``this`` is kept."""
    mine = {cell_key(c): c for c in this["results"]}
    theirs = {cell_key(c): c for c in other["results"]}
    result = Comparison(
        only_this=[k for k in mine if k not in theirs],
        only_other=[k for k in theirs if k not in mine],
    )
    for key, cell in mine.items():
        if key not in theirs:
            continue
        peer = theirs[key]
        why = [
            f"skipped in {name} ({c['skipped']})"
            for name, c in (("this", cell), ("other", peer))
            if c["skipped"] is not None
        ]
        if why:
            result.not_comparable.append((key, "; ".join(why)))
            continue
        result.ratios.append(
            Ratio(
                key,
                (cell["latency_ms"]["p50"], peer["latency_ms"]["p50"]),
                (cell["throughput_ips"], peer["throughput_ips"]),
            )
        )
    return result


def _name(key: CellKey) -> str:
    runtime, variant, precision, batch = key
    return f"{runtime} {variant} {precision} batch {batch}"


def format_comparison(
    comparison: Comparison, this_name: str = "this", other_name: str = "other"
) -> str:
    """A plain-text table, then the cells that could not be matched."""
    lines = [
        f"comparison: {this_name} / {other_name} (p50 ratio < 1 and throughput ratio > 1 "
        "mean this run is faster)"
    ]
    if comparison.ratios:
        header = (
            "cell",
            "p50 ms this",
            "p50 ms other",
            "p50 ratio",
            "img/s this",
            "img/s other",
            "throughput ratio",
        )
        rows = [
            (
                _name(r.key),
                f"{r.p50_ms[0]:.3f}",
                f"{r.p50_ms[1]:.3f}",
                f"{r.p50_ratio:.3f}",
                f"{r.throughput_ips[0]:.1f}",
                f"{r.throughput_ips[1]:.1f}",
                f"{r.throughput_ratio:.3f}",
            )
            for r in comparison.ratios
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            lines.append(
                "  ".join(
                    v.ljust(w) if i == 0 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    else:
        lines.append("no cell was measured in both reports")
    for key in comparison.only_this:
        lines.append(f"only in {this_name}: {_name(key)}")
    for key in comparison.only_other:
        lines.append(f"only in {other_name}: {_name(key)}")
    for key, why in comparison.not_comparable:
        lines.append(f"not compared: {_name(key)}: {why}")
    return "\n".join(lines) + "\n"
