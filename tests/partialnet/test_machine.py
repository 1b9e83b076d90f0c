"""The CPU facts every verdict and device report carry, read from another machine's
/proc/cpuinfo: an x86 one ('model name', 'flags') and ARM ones ('Features', MIDR fields)."""

from __future__ import annotations

from pathlib import Path

import pytest

from partialnet import machine

X86 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 fma f16c avx512f avx512_vnni
"""
# What Linux prints on a Raspberry Pi 4 (Cortex-A72, ARMv8.0: no dot product) ...
PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
# ... and on a Neoverse-V1 (Graviton3): dot product, i8mm, SVE.
V1 = """processor\t: 0
Features\t: fp asimd asimdhp asimddp sve i8mm bf16 svei8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.mark.parametrize(
    ("text", "model", "isa", "summary"),
    [
        (X86, "AMD EPYC 9B14", ["avx2", "fma", "f16c", "avx512f", "avx512_vnni"], "AVX-512 VNNI"),
        (PI4, "Cortex-A72", ["asimd"], "NEON"),
        (
            V1,
            "Neoverse-V1",
            ["asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve"],
            "SVE dotprod+i8mm",
        ),
    ],
)
def test_cpu_facts_from_cpuinfo(
    text: str, model: str, isa: list[str], summary: str, tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setattr(machine, "CPUINFO", str(tmp_path / "cpuinfo"))
    assert machine.cpu_model() == model
    assert machine.cpu_isa() == isa
    assert machine.isa_summary() == summary


def test_unknown_arm_core_is_named_by_its_ids(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cpuinfo").write_text(
        "Features\t: fp asimd\nCPU implementer\t: 0x61\nCPU part\t: 0x22\n"
    )
    monkeypatch.setattr(machine, "CPUINFO", str(tmp_path / "cpuinfo"))
    assert machine.cpu_model() == "ARM implementer 0x61 part 0x22"
