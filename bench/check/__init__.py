"""``partialnet-bench check DIR [--output OUT] [--threads N]``: an export verified on the
device it will run on.

For every artifact in DIR's manifest: its file and its reference are proved inside DIR and
equal to their recorded sha256 (before anything runs); where its runtime is installed the
export gate is repeated from the reference with the gate's own rules, and the artifact is
timed (batch 1 p50/p90/p99, throughput over the export's batch range). OUT/report.json and
report.md hold the results and this device's environment. Exit 0 when every checked artifact
passes, 1 when any fails (or a file changed), 2 for bad usage.

Needs numpy and one runtime: no torch, no Pillow (a test runs it in a venv without them).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path
from typing import Any

from partialnet.bench.args import UsageParser
from partialnet.bench.check.plan import Planned, plan
from partialnet.bench.check.report import FORMAT, KIND, write_check_report
from partialnet.bench.check.run import Timing, base_row, check_artifact
from partialnet.bench.environment import collect_environment, gpus
from partialnet.bench.perf.measure import ProgressLine
from partialnet.errors import MissingDependencyError, UsageError
from partialnet.export.gate.reference import Reference, read_reference
from partialnet.runtimes.base import RuntimeUnavailableError

log = logging.getLogger(__name__)
PROG = "partialnet-bench check"


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog=PROG,
        description="Verify an export on this device: sha256, the gate's rules on the "
        "export's reference, latency.",
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="a partialnet-export output")
    p.add_argument("--output", type=Path, default=Path("check-results"), help="report folder")
    p.add_argument("--threads", type=_positive_int, help="threads (default: runtime's own)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per batch (default 5)")
    p.add_argument("--iterations", type=_positive_int, default=50, help="timed calls (50)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    args = build_parser().parse_args(argv)
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output {args.output} is a file: choose a folder")
    manifest, items = plan(args.directory)  # every file verified before anything runs
    from partialnet.runtimes import available_runtimes, open_runner

    availability = available_runtimes()
    env = collect_environment(args.threads, ["partialnet-bench", "check", *argv])
    env.update(host=platform.node(), gpus=gpus())
    timing = Timing(args.warmup, args.iterations, None)
    references: dict[Path, Reference] = {}
    progress = ProgressLine()
    rows = [
        _one(item, availability, references, open_runner, args.threads, timing, progress)
        for item in items
    ]
    report = _report(args.directory, manifest, env, rows, timing)
    write_check_report(report, args.output)
    done = f"{report['verdict']}: {report['summary']}"
    print(f"{done}; wrote report.json, report.md to {args.output}")
    return 1 if report["verdict"] == "fail" else 0


def _one(
    item: Planned,
    availability: dict[str, str | None],
    references: dict[Path, Reference],
    open_runner: Any,
    threads: int | None,
    timing: Timing,
    progress: ProgressLine,
) -> dict[str, Any]:
    """One row: skipped with the reason, checked, or failed with the runtime's error."""
    row = base_row(item)
    reason = availability.get(row["runtime"] or "", "no runtime runs this target")
    if reason:
        return row | {"status": "skipped", "reason": reason}
    if item.reference not in references:
        references[item.reference] = read_reference(item.reference)  # ReferenceError: exit 1
    log.info("checking %s on %s", item.name, row["runtime"])
    try:
        return check_artifact(
            item, references[item.reference], open_runner, threads, timing, progress
        )
    except (RuntimeUnavailableError, MissingDependencyError) as exc:
        return row | {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # the runtime could not load or run it: a failed check
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"{PROG}: {item.name}: {type(exc).__name__}: {first}", file=sys.stderr)
        return row | {"status": "fail", "reason": f"{type(exc).__name__}: {first}"}


def _report(
    directory: Path,
    manifest: dict[str, Any],
    env: dict[str, Any],
    rows: list[dict[str, Any]],
    timing: Timing,
) -> dict[str, Any]:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "skipped")}
    verdict = "fail" if counts["fail"] else ("pass" if counts["pass"] else "nothing checked")
    summary = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"
    env["timing"] = {"warmup": timing.warmup, "iterations": timing.iterations}
    return {
        "kind": KIND,
        "format": FORMAT,
        "directory": str(directory),
        "variant": manifest.get("variant"),
        "input_size": manifest.get("input_size"),
        "export_versions": manifest.get("versions"),
        "verdict": verdict,
        "summary": summary,
        "environment": env,
        "artifacts": rows,
    }
