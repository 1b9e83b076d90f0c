"""ONNX Runtime as it runs on an ARM board, on this x86 machine: ``qemu-aarch64 -cpu MODEL``.

The guest is real: Debian bookworm's aarch64 Python 3.11 (its .debs, unpacked into a sysroot),
PyPI's aarch64 wheels of onnxruntime and numpy at this venv's versions, and this project's
packages copied in without torch, exactly the device path of the README ("On the device").
qemu-user answers the guest's feature queries (AT_HWCAP, MIDR_EL1) for the emulated core, and
ONNX Runtime's MLAS picks its int8 kernels by them: ``cortex-a72`` (ARMv8.0, a Raspberry Pi 4)
gets the widening-multiply NEON kernels, ``max`` the dot-product (UDOT/SDOT) and i8mm (UMMLA)
ones. What it computes is what such a core computes; its speed means nothing (every
instruction is translated), so only verdicts and figures are read from it.

One gap qemu 7.2 leaves: it hands the guest the host's (x86) /proc/cpuinfo, and ONNX
Runtime's cpuinfo library crashes on it. Each emulated core gets its own prefix (``-L``):
symlinks to the sysroot plus a /proc/cpuinfo written the way Linux writes it on ARM, from
the MIDR and HWCAPs the guest itself reads under that ``-cpu`` (so it cannot claim a feature
the core lacks).

    # cached, idempotent; then what the guest sees; then a check on the A72 core
    python -m partialnet.bench.goals.onnxruntime.emulated_arm --prepare
    python -m partialnet.bench.goals.onnxruntime.emulated_arm --facts --cpu max
    python -m partialnet.bench.goals.onnxruntime.emulated_arm --check DIR --cpu cortex-a72 \
        --output OUT

The guest's preparation and cache: ``partialnet.bench.goals.onnxruntime.arm_guest``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partialnet.bench.goals.onnxruntime.arm_guest import (
    READY,
    EmulationUnavailable,
    Guest,
    install_project,
    last_line,
    prepare,
    qemu,
    replace_dir,
    run_tool,
)

log = logging.getLogger(__name__)

# qemu-user's cores that bracket MLAS's aarch64 int8 kernel choice.
NO_DOTPROD_CPU = "cortex-a72"  # ARMv8.0-A: NEON without SDOT/UDOT (Raspberry Pi 4)
DOTPROD_CPU = "max"  # every feature qemu emulates: SDOT/UDOT, i8mm, SVE2, bf16
ARM_CPUS = {
    "cortex-a53": "ARMv8.0-A, NEON without dot product (Raspberry Pi 3, in-order)",
    NO_DOTPROD_CPU: "ARMv8.0-A, NEON without dot product (Raspberry Pi 4)",
    DOTPROD_CPU: "qemu's max: dot product, i8mm, SVE2, bf16",
}

# Linux's names for the arm64 AT_HWCAP / AT_HWCAP2 bits (arch/arm64/include/uapi/asm/hwcap.h),
# as its /proc/cpuinfo prints them in 'Features'.
# fmt: off
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
    "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
    "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb",
    "paca", "pacg",
)
HWCAP2_NAMES = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
    "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte",
    "ecv", "afp", "rpres", "mte3", "sme",
)
# fmt: on

# Run in the guest: the core's MIDR_EL1 (an ``mrs`` the guest may execute, as Linux allows
# when HWCAP_CPUID is set) and its AT_HWCAP/AT_HWCAP2 from the auxiliary vector.
_PROBE = """
import ctypes, json, mmap, platform, struct
code = struct.pack("<II", 0xD5380000, 0xD65F03C0)  # mrs x0, midr_el1; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
with open("/proc/self/auxv", "rb") as f:
    auxv = dict(struct.iter_unpack("<QQ", f.read()))
print(json.dumps({"machine": platform.machine(), "midr": midr,
                  "hwcap": auxv.get(16, 0), "hwcap2": auxv.get(26, 0)}))
"""
# What the check's own code and numpy see in the guest (the test's guard).
_FACTS = """
import json, platform, importlib.util
import numpy, onnxruntime
from numpy._core._multiarray_umath import __cpu_features__ as f
from partialnet.machine import cpu_isa, cpu_model, isa_summary
print(json.dumps({
    "machine": platform.machine(), "python": platform.python_version(),
    "cpu_model": cpu_model(), "cpu_isa": cpu_isa(), "isa": isa_summary(),
    "numpy_features": sorted(k for k, on in f.items() if on),
    "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
    "torch_importable": importlib.util.find_spec("torch") is not None,
}))
"""


def _guest_env(pythonpath: Sequence[Path]) -> dict[str, str]:
    # The host's PYTHON* variables (a venv's PYTHONPATH, PYTHONHOME) must not reach the guest.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _probe(guest: Guest, cpu: str) -> dict[str, Any]:
    cmd = [qemu() or "qemu-aarch64", "-cpu", cpu, "-L", str(guest.sysroot), str(guest.python)]
    out = run_tool(
        [*cmd, "-c", _PROBE], f"qemu-aarch64 -cpu {cpu} (probe)", 300, env=_guest_env([])
    )
    return json.loads(out)


def hwcap_features(hwcap: int, hwcap2: int) -> list[str]:
    """Linux's 'Features' names for the AT_HWCAP/AT_HWCAP2 bits that are set."""
    names = [n for bit, n in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
    return names + [n for bit, n in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1]


def cpuinfo_text(midr: int, features: Sequence[str], cpus: int) -> str:
    """/proc/cpuinfo as arm64 Linux writes it (one block per CPU) for one core's MIDR."""
    block = (
        "processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\n"
        "CPU implementer\t: 0x{imp:02x}\nCPU architecture: 8\nCPU variant\t: 0x{var:x}\n"
        "CPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n\n"
    )
    fields = {
        "features": " ".join(features),
        "imp": midr >> 24 & 0xFF,
        "var": midr >> 20 & 0xF,
        "part": midr >> 4 & 0xFFF,
        "rev": midr & 0xF,
    }
    return "".join(block.format(n=n, **fields) for n in range(cpus))


def _host_cpus() -> int:
    # ONNX Runtime's cpuinfo counts the host's /sys/devices/system/cpu/present (qemu passes
    # /sys through): /proc/cpuinfo must have one block for each of them.
    try:
        text = Path("/sys/devices/system/cpu/present").read_text().strip()
        return max(int(part.split("-")[-1]) for part in text.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def cpu_prefix(guest: Guest, cpu: str) -> Path:
    """``-L`` prefix for one emulated core: the sysroot's folders plus its /proc/cpuinfo."""
    prefix = guest.cache / "cpus" / cpu
    probe_file = prefix / "probe.json"
    if not probe_file.is_file():
        probe = _probe(guest, cpu)
        if probe["machine"] != "aarch64":
            raise EmulationUnavailable(f"the guest under -cpu {cpu} is {probe['machine']}")
        tmp = Path(tempfile.mkdtemp(prefix=f"cpu-{cpu}-", dir=guest.cache))
        for entry in guest.sysroot.iterdir():
            if entry.name != READY:
                (tmp / entry.name).symlink_to(entry.resolve())
        (tmp / "proc").mkdir()
        (tmp / "probe.json").write_text(json.dumps(probe))
        prefix.parent.mkdir(exist_ok=True)
        replace_dir(tmp, prefix)
    probe = json.loads(probe_file.read_text())
    features = hwcap_features(probe["hwcap"], probe["hwcap2"])
    text = cpuinfo_text(probe["midr"], features, _host_cpus())
    cpuinfo = prefix / "proc" / "cpuinfo"
    if not cpuinfo.is_file() or cpuinfo.read_text() != text:
        cpuinfo.write_text(text)
    return prefix


def run_python(
    guest: Guest,
    cpu: str,
    args: Sequence[str],
    *,
    timeout: float = 1800,
    cwd: Path | None = None,
    qemu_args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """The guest's python3.11 on ``args`` under ``-cpu cpu``, with the aarch64 wheels and a
    fresh copy of this project (no torch anywhere on its path). Not checked: the caller
    reads the exit status (a failed device check exits 1)."""
    binary = qemu()
    if binary is None:
        raise EmulationUnavailable("qemu-aarch64 is not installed: apt-get install qemu-user")
    prefix = cpu_prefix(guest, cpu)
    with tempfile.TemporaryDirectory(prefix="partialnet-arm-") as tmp:
        project = Path(tmp, "project")
        install_project(project)
        cmd = [binary, "-cpu", cpu, "-L", str(prefix), *qemu_args, str(guest.python), *args]
        log.debug("emulated ARM: %s", " ".join(cmd))
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or tmp,
            env=_guest_env([project, guest.site]),
        )


def guest_facts(guest: Guest, cpu: str) -> dict[str, Any]:
    """What the guest reports about itself: machine type, the CPU facts a device report
    records (partialnet.machine), numpy's detected features, versions, torch's absence."""
    done = run_python(guest, cpu, ["-c", _FACTS], timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the guest under -cpu {cpu} failed: {last_line(done.stderr)}")
    return json.loads(done.stdout)


# The instructions that tell MLAS's aarch64 int8 kernels apart, as (mask, value) over the
# 32-bit instruction word (Arm ARM encodings): the ARMv8.0 kernels widen with UMULL/SMULL and
# accumulate pairs with UADALP/SADALP; the dot-product ones use SDOT/UDOT; i8mm ones xMMLA.
KERNEL_INSTRUCTIONS = {
    "sdot/udot": ((0xBFE0FC00, 0x0E809400), (0xBFE0FC00, 0x2E809400),  # vector
                  (0xBFC0F400, 0x0F80E000), (0xBFC0F400, 0x2F80E000)),  # by element
    "smmla/ummla/usmmla": ((0xFFE0FC00, 0x4E80A400), (0xFFE0FC00, 0x6E80A400),
                           (0xFFE0FC00, 0x4E80AC00)),
    "umull/smull": ((0xBF20FC00, 0x0E20C000), (0xBF20FC00, 0x2E20C000)),
    "uadalp/sadalp": ((0xBF3FFC00, 0x0E206800), (0xBF3FFC00, 0x2E206800)),
}  # fmt: skip
_ONE_IMAGE = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
shape = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
s.run(None, {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape, np.float32)})
"""


def translated_kernels(guest: Guest, cpu: str, model: Path) -> dict[str, int]:
    """How many distinct instructions of each KERNEL_INSTRUCTIONS class qemu translated while
    ONNX Runtime ran ``model`` once on this core (``-d in_asm``: every guest instruction
    that executes is translated, so a class that is absent did not run)."""
    with tempfile.TemporaryDirectory(prefix="partialnet-asm-") as tmp:
        trace = Path(tmp, "in_asm.log")
        done = run_python(
            guest,
            cpu,
            ["-c", _ONE_IMAGE, str(Path(model).resolve())],
            timeout=600,
            qemu_args=["-d", "in_asm", "-D", str(trace)],
        )
        if done.returncode != 0:
            raise RuntimeError(f"the guest under -cpu {cpu} failed: {last_line(done.stderr)}")
        words = set()
        with trace.open() as f:
            for line in f:  # "0x5500817850:  a9b27bfd  stp x29, x30, ..."
                address, _, rest = line.partition(":  ")
                if address.startswith("0x") and len(rest) >= 8:
                    try:
                        words.add(int(rest[:8], 16))
                    except ValueError:
                        continue
    return {
        name: sum(any(w & mask == value for mask, value in encodings) for w in words)
        for name, encodings in KERNEL_INSTRUCTIONS.items()
    }


def check(
    guest: Guest,
    cpu: str,
    directory: Path,
    output: Path,
    *,
    iterations: int = 1,
    warmup: int = 0,
    timeout: float = 3600,
) -> tuple[int, dict[str, Any] | None, str]:
    """``partialnet-bench check DIRECTORY --output OUTPUT`` in the guest: (exit status, the
    report it wrote or None, its stderr). Latency is measured as little as the check allows
    (``iterations``): under emulation it means nothing."""
    argv = ["-m", "partialnet.bench.cli", "check", str(Path(directory).resolve())]
    argv += ["--output", str(Path(output).resolve())]
    argv += ["--iterations", str(iterations), "--warmup", str(warmup)]
    done = run_python(guest, cpu, argv, timeout=timeout)
    report_path = Path(output) / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return done.returncode, report, done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}")
    parser.add_argument("--prepare", action="store_true", help="fetch the guest (cached)")
    parser.add_argument("--facts", action="store_true", help="print what the guest sees")
    parser.add_argument("--check", type=Path, metavar="DIR", help="partialnet-bench check DIR")
    parser.add_argument("--output", type=Path, help="--check's report folder")
    parser.add_argument("--cpu", default=NO_DOTPROD_CPU, help=f"qemu -cpu ({', '.join(ARM_CPUS)})")
    args = parser.parse_args(argv)
    # Our own progress lines only: INFO on the root logger would let onnx's optimizer talk.
    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        guest = prepare(download=args.prepare)
    except EmulationUnavailable as exc:
        print(f"emulated ARM unavailable: {exc}", file=sys.stderr)
        return 1
    if args.prepare:
        print(
            f"aarch64 Python ready in {guest.cache} ({guest.size_bytes() / 1e6:.0f} MB) after "
            f"{time.perf_counter() - started:.1f} s"
        )
    if args.facts:
        print(json.dumps(guest_facts(guest, args.cpu), indent=1))
    if args.check is not None:
        output = args.output or Path(f"check-qemu-{args.cpu}")
        code, _, stderr = check(guest, args.cpu, args.check, output)
        sys.stderr.write(stderr)
        return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
