"""The CPU this process runs on: its model and the instruction-set extensions that change
what a runtime computes (VNNI, BF16, AMX) and how fast. Torch-free: the export gate records it
in every verdict, and a device check reads it where only numpy and one runtime are installed."""

from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"  # a module attribute, so that tests can give another machine's


# Linux on ARM prints no 'model name': its /proc/cpuinfo names the core by MIDR implementer and
# part number. The cores a device check is likely to meet (boards, phones, Graviton).
ARM_CORES = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x00, 0x051): "QEMU max",  # implementer 0: "software use"; part 'Q'
}


def _cpuinfo_fields() -> dict[str, str]:
    """The first value of every key in /proc/cpuinfo, keys lowercased (empty if unreadable)."""
    fields: dict[str, str] = {}
    try:
        with open(CPUINFO) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo, or the ARM core its implementer and part name, else
    platform.processor(), else the machine type."""
    fields = _cpuinfo_fields()
    if "model name" in fields:
        return fields["model name"]
    if "cpu part" in fields and "cpu implementer" in fields:
        try:
            key = (int(fields["cpu implementer"], 16), int(fields["cpu part"], 16))
        except ValueError:
            key = (-1, -1)
        return ARM_CORES.get(
            key, f"ARM implementer {fields['cpu implementer']} part {fields['cpu part']}"
        )
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


# The same on ARM (Linux's names in /proc/cpuinfo 'Features'): int8 kernels are picked by dot
# product (asimddp: SDOT/UDOT) and i8mm (SMMLA/UMMLA); asimdhp is native fp16.
ARM_ISA_FLAGS = ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")


def cpu_isa() -> list[str]:
    """The ISA_FLAGS (x86 'flags') or ARM_ISA_FLAGS (ARM 'Features') this CPU has, from
    /proc/cpuinfo; empty where unreadable."""
    fields = _cpuinfo_fields()
    if "flags" in fields:
        return [name for name in ISA_FLAGS if name in fields["flags"].split()]
    if "features" in fields:
        return [name for name in ARM_ISA_FLAGS if name in fields["features"].split()]
    return []


def isa_summary(flags: list[str] | None = None) -> str:
    """'AMX', 'AVX-512 VNNI+BF16', 'AVX2', 'NEON dotprod+i8mm' ...: the highest tier, as
    figures are quoted."""
    have = set(cpu_isa() if flags is None else flags)
    if "amx_tile" in have:
        return "AMX"
    if "avx512f" in have:
        extras = [n for f, n in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16")) if f in have]
        return "AVX-512" + (" " + "+".join(extras) if extras else "")
    if "avx2" in have:
        return "AVX2" + (" VNNI" if "avx_vnni" in have else "")
    if "asimd" in have:
        extras = [n for f, n in (("asimddp", "dotprod"), ("i8mm", "i8mm")) if f in have]
        base = "SVE2" if "sve2" in have else "SVE" if "sve" in have else "NEON"
        return base + (" " + "+".join(extras) if extras else "")
    return "unknown"
