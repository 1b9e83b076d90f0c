"""The CPU this process runs on: its model and the instruction-set extensions that change
what a runtime computes (VNNI, BF16, AMX) and how fast. Torch-free: the export gate records it
in every verdict, and a device check reads it where only numpy and one runtime are installed."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo, else platform.processor(), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction-set extensions that change what a runtime computes and how fast: VNNI for
# int8 dot products, BF16/AMX for bf16 (a CPU runtime's default where present), AVX512_FP16
# for native fp16.
ISA_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU has (from /proc/cpuinfo's flags; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in ISA_FLAGS if name in flags]
    except OSError:
        pass
    return []


def isa_summary(flags: list[str] | None = None) -> str:
    """'AMX', 'AVX-512 VNNI+BF16', 'AVX2' ...: the highest tier, as figures are quoted."""
    have = set(cpu_isa() if flags is None else flags)
    if "amx_tile" in have:
        return "AMX"
    if "avx512f" in have:
        extras = [n for f, n in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16")) if f in have]
        return "AVX-512" + (" " + "+".join(extras) if extras else "")
    if "avx2" in have:
        return "AVX2" + (" VNNI" if "avx_vnni" in have else "")
    return "unknown"
