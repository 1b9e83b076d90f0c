"""PNG plots of a run: per-iteration latency distributions and throughput against batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CellKey = tuple[str, str, str, int]  # runtime, variant, precision, batch


def _figure(**kwargs: Any) -> Any:
    """A bare Figure rendered by Agg: no pyplot state, no display, no global backend change."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _label(runtime: str, variant: str, precision: str) -> str:
    return f"{runtime}\n{variant} {precision}"


def plot_latency(samples: Mapping[CellKey, Sequence[float]], path: Path) -> Path:
    """One panel per batch size, a box per (runtime, variant, precision) of its per-iteration
    latencies (ms, warmup excluded)."""
    by_batch: dict[int, dict[str, Sequence[float]]] = defaultdict(dict)
    for (runtime, variant, precision, batch), values in samples.items():
        if values:
            by_batch[batch][_label(runtime, variant, precision)] = values
    batches = sorted(by_batch) or [0]
    width = max(5.0, 1.2 * max((len(by_batch[b]) for b in batches), default=1))
    fig = _figure(figsize=(width * len(batches), 4.5))
    axes = fig.subplots(1, len(batches), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        cells = by_batch.get(batch)
        if not cells:
            ax.text(0.5, 0.5, "no measured cells", ha="center", va="center")
            ax.set_axis_off()
            continue
        ax.boxplot(list(cells.values()), showfliers=True)
        ax.set_xticks(range(1, len(cells) + 1), list(cells), fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("latency per call (ms)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Latency distribution per runtime")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_throughput(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Images/s against batch size, one line per (runtime, variant, precision)."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for cell in results:
        if cell.get("skipped") is None and cell.get("throughput_ips") is not None:
            label = _label(cell["runtime"], cell["variant"], cell["precision"]).replace("\n", " ")
            lines[label].append((cell["batch"], cell["throughput_ips"]))
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    if not lines:
        ax.text(0.5, 0.5, "no measured cells", ha="center", va="center")
        ax.set_axis_off()
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=label)
    if lines:
        batches = sorted({b for pts in lines.values() for b, _ in pts})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (images/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax.set_title("Throughput against batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
