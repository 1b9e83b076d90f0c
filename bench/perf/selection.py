"""The ``--precision auto`` choice recorded in a manifest, as a table for ``partialnet-bench``."""

from __future__ import annotations

from typing import Any


def format_selection(artifacts: list[dict[str, Any]]) -> str:
    """One table per artifact placed by ``--precision auto`` ('' when none was)."""
    blocks = []
    for record in artifacts:
        selection = record.get("selection")
        if not selection:
            continue
        lines = [
            f"{record['target']}: --precision auto chose {selection['chosen']} "
            f"({record['path']}), budget {selection['max_drop']} top-1 points",
            f"  {'precision':<10}{'latency_ms':>12}{'top1':>9}  passed",
        ]
        for c in selection["candidates"]:
            ms = "-" if c.get("latency_ms") is None else f"{c['latency_ms']:.3f}"
            top1 = "-" if c.get("top1") is None else f"{c['top1']:.2%}"
            mark = " <- chosen" if c["precision"] == selection["chosen"] else ""
            verdict = f"skipped: {c['skipped']}" if c.get("skipped") else str(c["passed"])
            lines.append(f"  {c['precision']:<10}{ms:>12}{top1:>9}  {verdict}{mark}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
