"""report.json and report.md of a device check, written only once every artifact is done:
a failed or interrupted check leaves an earlier report as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from partialnet.export.output.files import atomic_file

KIND = "partialnet-check"
FORMAT = 1


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def batch1(row: dict[str, Any]) -> dict[str, Any] | None:
    """The batch-1 latency cell of a row, if it was measured."""
    for cell in row.get("timing") or []:
        if cell.get("batch") == 1 and "latency_ms" in cell:
            return cell
    return None


def _parity_text(row: dict[str, Any]) -> str:
    p = row.get("parity")
    if not p:
        return "-"
    text = f"cos {p['cosine']:.6f}, min/image {p['min_image_cosine']:.5f}, rel {p['max_rel']:.2g}"
    if p.get("outputs") is None:
        text += f", top-1 agreement {p['top1_agreement']:.1%}"
    if p.get("accuracy"):
        acc = p["accuracy"]
        text += f", top-1 {acc['top1']:.2%} (eager {acc['reference_top1']:.2%})"
    if p.get("failed_rules"):
        text += f" [{'; '.join(p['failed_rules'])}]"
    return text


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Device check of {report['directory']}",
        "",
        f"{env.get('host')}: {env.get('cpu_model')} ({env.get('isa')}), {env.get('os')}, "
        f"Python {env.get('python')}; GPUs: "
        + (", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"),
        "",
        f"Verdict: **{report['verdict']}** ({report['summary']})",
        "",
        "| artifact | runtime | precision | here | export gate | same figures | parity here | "
        "p50 / p90 / p99 ms (batch 1) | img/s by batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["artifacts"]:
        here = row["status"] + (f": {row['reason']}" if row.get("reason") else "")
        if (row.get("parity") or {}).get("status") == "simulated":
            here += " (simulated)"
        cell = batch1(row)
        lat = "-"
        if cell is not None:
            s = cell["latency_ms"]
            lat = f"{s['p50']:.3f} / {s['p90']:.3f} / {s['p99']:.3f}"
        elif row.get("timing_skipped"):
            lat = row["timing_skipped"]
        ips = ", ".join(
            f"b{c['batch']} {_num(c.get('throughput_ips'), '.1f')}"
            for c in row.get("timing") or []
            if "throughput_ips" in c
        )
        same = {True: "yes", False: "no", None: "-"}[row.get("same_as_gate")]
        lines.append(
            f"| {row['artifact']} | {row['runtime']} | {row['precision']} | {here} | "
            f"{row['gate']} | {same} | {_parity_text(row)} | {lat} | {ips or '-'} |"
        )
    lines += _execution_precision_lines(report["artifacts"])
    packages = env.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    asked = (env.get("threads") or {}).get("requested")
    lines += [
        "",
        f"ISA flags: {', '.join(env.get('cpu_isa') or []) or 'unknown'}; cores: "
        f"{env.get('usable_cores')} usable; threads asked: {asked}",
        f"Versions: {versions}",
        f"Command: `{env.get('command')}`",
        "",
    ]
    return "\n".join(lines)


def _execution_precision_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per artifact whose runtime picks a precision by device: the precision
    checked, the setting that chose it, and what a plain load executes in when that differs."""
    lines = []
    for row in rows:
        p = row.get("execution_precision")
        if not p:
            continue
        hint, setting = p["runner_hint"], p["setting"] or "the runtime's precision setting"
        line = f"- {row['artifact']}: checked in {p['checked_in']} (" + (
            f"{setting}={hint})" if hint else f"no {setting})"
        )
        default = p["plain_compile_default"]
        if p["plain_compile_checked"] is False:
            line += (
                f"; a plain {row['runtime']} load on this device executes in {default}, which "
                f"this check did not judge: set {setting}={hint or p['checked_in']} (the "
                "artifact cannot carry it)"
            )
        elif default is not None:
            line += f"; a plain {row['runtime']} load on this device executes in {default} too"
        lines.append(line)
    return ["", "Execution precision:", *lines] if lines else []


def write_check_report(report: dict[str, Any], directory: Path) -> None:
    """report.json then report.md, each replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    with atomic_file(directory / "report.md") as tmp:
        tmp.write_text(to_markdown(report))
