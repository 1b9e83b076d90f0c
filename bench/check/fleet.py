"""``partialnet-bench compare R1.json R2.json ... --output OUT``: device checks side by side.

Reads the report.json of several ``partialnet-bench check`` runs (one per device) and writes
OUT/fleet.json, OUT/fleet.md (every artifact's batch-1 p50 latency and verdict per device)
and OUT/fleet.png (the latencies as grouped bars, failures hatched). A device whose verdict
differs from the export machine's gate is marked ``differs``. Exit 0 once written (the
verdicts are in the table; each device's check exited 1 where it failed), 2 for bad usage.
(``partialnet-bench --compare REPORT`` is the latency bench's ratio table against one
report; it is unchanged.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from partialnet.bench.args import UsageParser
from partialnet.bench.check.report import KIND, batch1
from partialnet.errors import UsageError
from partialnet.export.output.files import atomic_file


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="partialnet-bench compare",
        description="Latency and verdict of every artifact on every device (check reports).",
    )
    p.add_argument("reports", type=Path, nargs="+", metavar="REPORT", help="check report.json")
    p.add_argument("--output", type=Path, default=Path("fleet"), help="output folder")
    return p


def load_check_report(path: Path) -> dict[str, Any]:
    """A check report, or a one-line UsageError naming the file."""
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"report not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise UsageError(
            f"{path} is not a 'partialnet-bench check' report.json (for latency reports use "
            "partialnet-bench --compare REPORT)"
        )
    return report


def device_name(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    gpu = ", ".join(g.get("name", "?") for g in env.get("gpus") or [])
    where = f"{env.get('cpu_model') or '?'}, {env.get('isa') or '?'}" + (f", {gpu}" if gpu else "")
    return f"{env.get('host') or '?'} ({where})"


def fleet_table(reports: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rows keyed by artifact (path and sha256: a rebuilt file is another row)."""
    names = _unique([device_name(r) for _, r in reports])
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, (source, report) in zip(names, reports, strict=True):
        for art in report.get("artifacts") or []:
            key = (str(art.get("artifact")), str(art.get("sha256")))
            row = rows.setdefault(
                key,
                {
                    "artifact": key[0],
                    "sha256": key[1],
                    "runtime": art.get("runtime"),
                    "precision": art.get("precision"),
                    "gate": art.get("gate"),
                    "devices": {},
                },
            )
            cell = batch1(art)
            status = art.get("status")
            differs = status in ("pass", "fail") and row["gate"] in ("pass", "fail")
            row["devices"][name] = {
                "report": source,
                "status": status,
                "reason": art.get("reason"),
                "p50_ms": cell["latency_ms"]["p50"] if cell else None,
                "p99_ms": cell["latency_ms"]["p99"] if cell else None,
                "differs_from_gate": bool(differs and status != row["gate"]),
            }
    return {"devices": names, "artifacts": list(rows.values())}


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def to_markdown(table: dict[str, Any]) -> str:
    devices = table["devices"]
    lines = [
        "# Fleet: every artifact on every device",
        "",
        "Batch-1 p50 latency (ms) and the verdict there; **differs** marks a device whose "
        "verdict is not the export machine's gate verdict.",
        "",
        "Devices: " + "; ".join(f"D{i + 1} = {d}" for i, d in enumerate(devices)),
        "",
        "| artifact | runtime | precision | export gate | "
        + " | ".join(f"D{i + 1}" for i in range(len(devices)))
        + " |",
        "|---|---|---|---|" + "---|" * len(devices),
    ]
    for row in table["artifacts"]:
        cells = []
        for device in devices:
            d = row["devices"].get(device)
            if d is None:
                cells.append("not in report")
                continue
            text = d["status"] or "?"
            if d["p50_ms"] is not None:
                text = f"{d['p50_ms']:.3f} ms, {text}"
            if d["differs_from_gate"]:
                text += " **differs**"
            cells.append(text)
        lines.append(
            f"| {row['artifact']} | {row['runtime']} | {row['precision']} | {row['gate']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_fleet(table: dict[str, Any], path: Path) -> None:
    """Grouped horizontal bars: one group per artifact, one bar per device; a failed verdict
    is hatched and red-edged, a verdict that differs from the gate's is annotated."""
    from matplotlib.figure import Figure

    devices, rows = table["devices"], table["artifacts"]
    height = 0.8 / max(len(devices), 1)
    fig = Figure(figsize=(9, 1.0 + 0.45 * len(rows) * max(len(devices), 1)))
    ax = fig.subplots()
    for j, device in enumerate(devices):
        for i, row in enumerate(rows):
            d = row["devices"].get(device)
            if d is None or d["p50_ms"] is None:
                continue
            y = i + j * height
            failed = d["status"] == "fail"
            ax.barh(
                y,
                d["p50_ms"],
                height=height * 0.9,
                color=f"C{j}",
                hatch="//" if failed else None,
                edgecolor="red" if failed else f"C{j}",
                label=f"D{j + 1}" if i == 0 else None,
            )
            if d["differs_from_gate"]:
                ax.annotate(" differs from gate", (d["p50_ms"], y), va="center", color="red")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([f"{r['artifact']}\n({r['runtime']})" for r in rows], fontsize=7)
    ax.set_xlabel("batch-1 p50 latency (ms); hatched: failed the gate's rules there")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("; ".join(f"D{i + 1} = {d}" for i, d in enumerate(devices)), fontsize=6)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    args = build_parser().parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output {args.output} is a file: choose a folder")
    reports = [(str(p), load_check_report(p)) for p in args.reports]
    table = fleet_table(reports)
    args.output.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.output / "fleet.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    with atomic_file(args.output / "fleet.md") as tmp:
        tmp.write_text(to_markdown(table))
    wrote = "fleet.json, fleet.md"
    if importlib.util.find_spec("matplotlib") is not None:
        plot_fleet(table, args.output / "fleet.png")
        wrote += ", fleet.png"
    else:
        wrote += " (no plot: pip install matplotlib)"
    print(f"wrote {wrote} to {args.output}")
    return 0
