"""parity.json and parity.md for ``partialnet-bench parity``: cells, the matrix, timing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partialnet.bench.perf.report import _environment_lines
from partialnet.export.gate import parity as gate
from partialnet.export.options import Precision


@dataclass
class Cell:
    variant: str
    runtime: str
    precision: str
    status: str  # pass | fail | unavailable | error
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    images: int | None = None
    reason: str | None = None
    top1_agreement_lenient: float | None = None
    min_image_cosine: float | None = None
    inputs: str | None = None  # seeded noise, eval images or calibration images
    accuracy: dict[str, Any] | None = None  # with labelled images: top1, top5, reference_top1
    simulated: bool = False  # the runner simulated the device (info().extra['simulated'])
    outputs: int | None = None  # a backbone: how many maps were each checked (worst shown)
    seconds: float | None = None
    cpu_seconds: float | None = None  # this process's CPU time (all threads) in the cell
    runner_precision: str | None = None
    artifact: str | None = None


def tolerances() -> dict[str, Any]:
    return {
        "reference": "the eager (training-form) model in fp32, on the same images",
        "inputs": "eval images when given, else calibration images, else the export gate's "
        f"seeded standard-normal NCHW images (numpy default_rng({gate.PARITY_SEED}))",
        **{p.value: dict(rule) for p, rule in gate.GATE_RULES.items()},
    }


def cell_text(cell: Cell) -> str:
    if cell.status in ("pass", "fail"):
        cos = "-" if cell.cosine is None else f"{cell.cosine:.7f}"
        rel = "-" if cell.max_rel is None else f"{cell.max_rel:.2g}"
        if cell.outputs:
            verdict = cell.status.upper() + (" (simulated)" if cell.simulated else "")
            return f"{verdict} cos {cos} rel {rel} (worst of {cell.outputs} outputs)"
        top1 = f"top-1 {cell.top1_agreement:.1%}"
        lenient = cell.top1_agreement_lenient
        if cell.precision == Precision.FP16.value and lenient != cell.top1_agreement:
            top1 += f" ({lenient:.1%} within error)"
        if cell.accuracy is not None:
            top1 += (
                f" acc {cell.accuracy['top1']:.1%} (eager {cell.accuracy['reference_top1']:.1%})"
            )
        verdict = cell.status.upper() + (" (simulated)" if cell.simulated else "")
        return f"{verdict} cos {cos} rel {rel} {top1}"
    return "n/a" if cell.status == "unavailable" else "ERROR"


def _matrix(cells: list[Cell], runtimes: list[str]) -> tuple[list[list[str]], list[str]]:
    """Rows of [variant/precision, one text per runtime]; reasons as numbered footnotes."""
    notes: list[str] = []
    rows: dict[str, list[str]] = {}
    for cell in cells:
        row = rows.setdefault(f"{cell.variant}/{cell.precision}", [""] * len(runtimes))
        text = cell_text(cell)
        if cell.reason:
            notes += [] if cell.reason in notes else [cell.reason]
            text += f" [{notes.index(cell.reason) + 1}]"
        row[runtimes.index(cell.runtime)] = text
    return [[name, *row] for name, row in rows.items()], [
        f"[{i}] {n}" for i, n in enumerate(notes, 1)
    ]


def format_matrix(cells: list[Cell], runtimes: list[str]) -> str:
    rows, notes = _matrix(cells, runtimes)
    table = [["variant/precision", *runtimes], *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join([*lines, *(["", *notes] if notes else [])])


def summary(cells: list[Cell]) -> str:
    counts = {
        s: sum(c.status == s for c in cells) for s in ("pass", "fail", "error", "unavailable")
    }
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _time_lines(timing: dict[str, Any]) -> list[str]:
    """Wall seconds per variant; the exports ran in the background worker (their own CPU)."""
    lines = [
        "| variant | total s | CPU s | reference s | cells s | slowest cell | "
        "export s (background) | waited for export s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def per(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in values.items() if v is not None) or "-"

    for variant, t in timing["variants"].items():
        cells = {k: v for k, v in t["cell_seconds"].items() if v}
        slowest = max(cells, key=cells.__getitem__, default=None)
        lines.append(
            f"| {variant} | {t['total_seconds']:.1f} | {t['cpu_seconds']:.1f} | "
            f"{t['reference_seconds']:.1f} | {sum(cells.values()):.1f} | "
            f"{f'{slowest} {cells[slowest]:.1f}' if slowest else '-'} | "
            f"{per(t['export_seconds'])} | {per(t['export_wait_seconds'])} |"
        )
    total = f"| all | {timing['total_seconds']:.1f} | {timing['cpu_seconds']:.1f} |"
    return [*lines, total + " |" * 5]


def to_markdown(report: dict[str, Any], runtimes: list[str]) -> str:
    cells = [Cell(**c) for c in report["cells"]]
    rows, notes = _matrix(cells, runtimes)
    tol = report["tolerances"]
    fp32, fp16, int8 = tol["fp32"], tol["fp16"], tol["int8"]
    inputs = sorted({c.inputs for c in cells if c.inputs})
    return "\n".join(
        [
            "# PartialNet parity matrix",
            "",
            f"Every runtime against {tol['reference']}; inputs: {tol['inputs']}. This run: "
            f"{', '.join(inputs) or '-'}.",
            "",
            f"{summary(cells)}.",
            "",
            f"- fp32: {fp32['rule']} (max_rel {fp32['max_rel']:g}, "
            f"min_cosine {fp32['min_cosine']})",
            f"- fp16: {fp16['rule']} (min_cosine {fp16['min_cosine']}, "
            f"min_top1_agreement {fp16['min_top1_agreement']:.0%})",
            f"- int8: {int8['rule']} (max_top1_drop {int8['max_top1_drop']:.0%}, "
            f"min_top1_agreement {int8['min_top1_agreement']:.0%}, "
            f"min_image_cosine {int8['min_image_cosine']})",
            "",
            "| variant/precision | " + " | ".join(runtimes) + " |",
            "| --- |" + " --- |" * len(runtimes),
            *("| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows),
            "",
            *(f"{n}  " for n in notes),
            "",
            "## Time",
            "",
            *_time_lines(report["timing"]),
            "",
            "## Environment",
            "",
            *_environment_lines(report["environment"]),
            "",
        ]
    )


def write_outputs(report: dict[str, Any], runtimes: list[str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "parity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (directory / "parity.md").write_text(to_markdown(report, runtimes))


MAX_REASON = 400


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
