"""The ONNX Runtime int8 artifacts on ARM, measured by emulation (issue 14, point 5).

    python -m partialnet.bench.goals.onnxruntime.int8_arm [--cpus cortex-a72,max] [--digits CKPT]
    python -m partialnet.bench.goals.int8 --skip-speed --emulate-arm cortex-a72,max

Exports the trained digits t0 as int8 ONNX the way a user does (``partialnet-export
--precision int8``: calibrated on the digits' train split, gated on their 359 val images;
both Q/DQ flavours it writes), then runs ``partialnet-bench check`` on that folder here
(x86, equal to the export gate) and, for each ARM core, inside the emulated aarch64 Python
of ``emulated_arm`` (the real aarch64 onnxruntime wheel, torch-free). Prints per artifact
and device the check's verdict, min per-image cosine, top-1 agreement and top-1 against
the eager fp32 model, plus which int8 instructions ONNX Runtime executed there (one image
traced with ``qemu -d in_asm``). Under emulation latency means nothing: none is shown.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from partialnet.bench.goals.onnxruntime import emulated_arm

DEFAULT_DIGITS = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "digits_t0_64.ckpt"
DEFAULT_CPUS = (emulated_arm.NO_DOTPROD_CPU, emulated_arm.DOTPROD_CPU)


def export_digits_int8(checkpoint: Path, work: Path) -> Path:
    """``partialnet-export --target onnx --precision int8`` of the trained digits model."""
    from partialnet.bench.data.datasets import write_digits_folders
    from partialnet.export.cli.main import main as export_main

    train, val = write_digits_folders(work / "digits")
    out = work / "export"
    argv = ["--checkpoint", str(checkpoint), "--target", "onnx", "--precision", "int8"]
    argv += ["--calibration-data", str(train), "--eval-data", str(val), "--output", str(out)]
    if export_main(argv) != 0:
        raise SystemExit("the int8 export failed (see above)")
    return out


def native_check(directory: Path, output: Path) -> dict[str, Any]:
    """The check on this machine, in this process (its figures equal the export gate's)."""
    import json

    from partialnet.bench import cli

    cli.main(["check", str(directory), "--output", str(output), "--iterations", "3"])
    return json.loads((output / "report.json").read_text())


def figures(row: dict[str, Any]) -> str:
    """One artifact's verdict and parity figures from a check report row."""
    parity = row.get("parity") or {}
    accuracy = parity.get("accuracy") or {}
    if not parity:
        return f"{row['status']} ({row.get('reason', 'no figures')})"
    return (
        f"{row['status']}: min cosine {parity['min_image_cosine']:.6f}, agreement "
        f"{parity['top1_agreement']:.2%}, top-1 {accuracy.get('top1', float('nan')):.2%} "
        f"(eager fp32 {accuracy.get('reference_top1', float('nan')):.2%})"
    )


def run(checkpoint: Path, cpus: list[str], work: Path) -> int:
    """Export, check here, check on every emulated core; print; 1 if any check failed."""
    guest = emulated_arm.prepare()  # downloads the guest the first time (~15 s, ~200 MB)
    work.mkdir(parents=True, exist_ok=True)
    directory = export_digits_int8(checkpoint, work)
    reports = {"native": native_check(directory, work / "check-native")}
    devices = {"native": f"{reports['native']['environment']['isa']} (this machine)"}
    kernels: dict[str, dict[str, dict[str, int]]] = {}
    failed = False
    for cpu in cpus:
        facts = emulated_arm.guest_facts(guest, cpu)
        code, report, stderr = emulated_arm.check(guest, cpu, directory, work / f"check-{cpu}")
        if report is None:
            print(f"qemu -cpu {cpu}: the check wrote no report (exit {code}): {stderr[-500:]}")
            return 1
        failed |= code != 0
        reports[cpu] = report
        env = report["environment"]
        devices[cpu] = (
            f"qemu -cpu {cpu}: {facts['machine']} {env['cpu_model']}, {env['isa']} "
            f"({' '.join(env['cpu_isa'])}); onnxruntime {facts['onnxruntime']}, torch "
            f"{'importable' if facts['torch_importable'] else 'absent'}"
        )
        names = [row["artifact"] for row in report["artifacts"] if row["runtime"] == "onnxruntime"]
        kernels[cpu] = {
            name: emulated_arm.translated_kernels(guest, cpu, directory / name) for name in names
        }
    native_rows = reports["native"]["artifacts"]
    gate_isa = (native_rows[0].get("gate_parity") or {}).get("machine", {}).get("isa", "?")
    print(f"digits t0 64 px int8 ONNX, gate on {gate_isa}; the check's figures per device:")
    for name, text in devices.items():
        print(f"  {name}: {text}")
    for native_row in native_rows:
        artifact = native_row["artifact"]
        print(f"{artifact}:")
        for name, report in reports.items():
            row = next(r for r in report["artifacts"] if r["artifact"] == artifact)
            print(f"  {name:10} {figures(row)}")
            if name in kernels:
                counts = ", ".join(f"{k} {v}" for k, v in kernels[name][artifact].items())
                print(f"  {'':10} int8 instructions run (distinct): {counts}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partialnet.bench.goals.onnxruntime.int8_arm")
    parser.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="qemu-aarch64 -cpu list")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    args = parser.parse_args(argv)
    # Our own progress lines only: INFO on the root logger would let onnx's optimizer talk.
    logging.basicConfig(format="%(message)s")
    logging.getLogger(emulated_arm.__name__).setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="partialnet-int8-arm-") as tmp:
        try:
            return run(args.digits, args.cpus.split(","), Path(tmp))
        except emulated_arm.EmulationUnavailable as exc:
            print(f"emulated ARM unavailable: {exc}")
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
