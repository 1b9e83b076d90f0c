"""Export performance: wall time and peak memory of ``partialnet-export --target all``, and
the ONNX node count of the inference form against the eager model exported directly.

    python -m partialnet.bench.perf.export_perf --variants t1,l
    python -m partialnet.bench.perf.export_perf --variants t1 --precision int8 \
        --calibration-data DIR

Each export runs in its own process; its peak RSS is sampled from outside.
Figures are printed; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import partialnet
from partialnet.bench.perf.baseline import export_eager_onnx, node_count

# The project's goals (seconds, MiB), printed beside the measurements.
GOALS = {
    ("t1", "fp32"): (60.0, 4096.0),
    ("l", "fp32"): (300.0, None),
    ("t1", "int8"): (120.0, 4096.0),
}


def time_export(
    variant: str, out_dir: Path, extra: list[str] | None = None, target: str = "all"
) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one ``--target`` (all) export process.

    The process tree's RSS is sampled every 20 ms (the exporter's children included).
    """
    import psutil

    command = [
        sys.executable,
        "-m",
        "partialnet.export.cli",
        "--variant",
        variant,
        "--target",
        target,
        "--output",
        str(out_dir),
        *(extra or []),
    ]
    log = out_dir.with_suffix(".log")
    peak = 0
    started = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            time.sleep(0.02)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(log.read_text()[-2000:], file=sys.stderr)
    return seconds, peak / 2**20, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.perf.export_perf")
    parser.add_argument("--variants", default="t1,l")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--calibration-data", help="images for int8 (a folder)")
    args = parser.parse_args(argv)
    extra = ["--precision", args.precision]
    if args.calibration_data:
        extra += ["--calibration-data", args.calibration_data]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(
        f"{'variant':8} {'all targets (s)':>16} {'peak RSS (MiB)':>15} {'goal':>18} "
        f"{'ONNX nodes: eager':>18} {'inference':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            seconds, peak_mb, code = time_export(variant, Path(tmp) / variant, extra)
            torch.manual_seed(0)
            model = partialnet.create_model(variant).eval()
            size = model.cfg.meta.input_size
            eager_nodes = node_count(
                export_eager_onnx(model, Path(tmp) / f"{variant}-eager.onnx", size)
            )
            ours = next((Path(tmp) / variant).glob("*.onnx"), None)
            inference_nodes = node_count(ours) if ours else -1
            goal_s, goal_mb = GOALS.get((variant, args.precision), (None, None))
            goal = (f"<= {goal_s:.0f} s" if goal_s else "-") + (
                f", <= {goal_mb / 1024:.0f} GB" if goal_mb else ""
            )
            status = "" if code == 0 else f"  (export exited {code})"
            print(
                f"{variant:8} {seconds:16.1f} {peak_mb:15.0f} {goal:>18} {eager_nodes:18d} "
                f"{inference_nodes:10d}{status}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
