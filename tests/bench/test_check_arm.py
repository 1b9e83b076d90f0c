"""partialnet-bench check on ARM, by emulation: the int8 ONNX export of the trained digits t0,
checked by the real aarch64 onnxruntime wheel in Debian's aarch64 Python (no torch) under
``qemu-aarch64 -cpu cortex-a72`` (ARMv8.0: no dot product) and ``-cpu max`` (dot product,
i8mm), whose int8 kernels ONNX Runtime's MLAS chooses differently
(partialnet.bench.goals.onnxruntime.emulated_arm).

The guest is prepared by
``python -m partialnet.bench.goals.onnxruntime.emulated_arm --prepare`` (.ci/run does it
where apt-get works): the tests never download; without it they skip with the reason.
The verdicts are the check's own, by the export gate's int8 rule (partialnet.export.gate.parity;
with labels, as here: top-1 at most 1 point below the eager fp32 model's). That rule alone let
the 8-bit-weight artifact through on AVX2 (issue 14: -0.74 point, min per-image cosine 0.52),
so the label-free rule's floor, every image's cosine >= 0.98 against the eager fp32 logits, is
asserted as well: the figure that exposed the saturation. Under emulation nothing is timed.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from partialnet.bench.goals.onnxruntime import emulated_arm
from partialnet.export.gate.parity import INT8_MIN_IMAGE_COSINE

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CPUS = (emulated_arm.NO_DOTPROD_CPU, emulated_arm.DOTPROD_CPU)
ISA = {emulated_arm.NO_DOTPROD_CPU: "NEON", emulated_arm.DOTPROD_CPU: "SVE2 dotprod+i8mm"}


@pytest.fixture(scope="module")
def guest() -> emulated_arm.Guest:
    try:
        return emulated_arm.prepare(download=False)
    except emulated_arm.EmulationUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def int8_export(
    digits_checkpoint: Path,
    digits_folders: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """``partialnet-export --precision int8`` (both Q/DQ flavours), calibrated on 64 train
    digits and gated on 2 held-out digits per class: 20 images keep each emulated check near
    20 s while every class is still judged."""
    from partialnet.export.cli.main import main as export_main

    train, val = digits_folders
    val20 = tmp_path_factory.mktemp("val20")
    for class_dir in sorted(val.iterdir()):
        (val20 / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:2]:
            shutil.copy(image, val20 / class_dir.name / image.name)
    out = tmp_path_factory.mktemp("int8")
    argv = ["--checkpoint", str(digits_checkpoint), "--target", "onnx", "--precision", "int8"]
    argv += ["--calibration-data", str(train), "--calibration-images", "64"]
    argv += ["--eval-data", str(val20), "--output", str(out)]
    assert export_main(argv) == 0
    return out


def test_guest_is_aarch64_with_and_without_dot_product(guest: emulated_arm.Guest) -> None:
    """What the checks below rely on: an aarch64 interpreter with the real aarch64 wheel of
    this venv's onnxruntime and no torch, whose CPU features differ by -cpu (numpy reads
    them from the kernel's HWCAPs, independently of the /proc/cpuinfo we write)."""
    plain, dot = (emulated_arm.guest_facts(guest, cpu) for cpu in CPUS)
    for facts in (plain, dot):
        assert facts["machine"] == "aarch64", facts
        assert facts["onnxruntime"] == importlib.metadata.version("onnxruntime")
        assert facts["torch_importable"] is False
    assert plain["cpu_model"] == "Cortex-A72" and plain["isa"] == "NEON", plain
    assert "asimddp" not in plain["cpu_isa"] and "ASIMDDP" not in plain["numpy_features"]
    assert {"asimddp", "i8mm"} <= set(dot["cpu_isa"]) and "ASIMDDP" in dot["numpy_features"]


def test_onnxruntime_takes_its_dot_product_kernels_only_where_the_core_has_them(
    guest: emulated_arm.Guest, int8_export: Path
) -> None:
    """The two cores run different int8 code: SDOT/UDOT under max, the widening
    UMULL/UADALP kernels of ARMv8.0 under cortex-a72 (instructions qemu translated while
    the int8 artifact ran one image), so the checks below cover both kernel families."""
    model = int8_export / "partialnet-t0-64x64-int8.onnx"
    plain, dot = (emulated_arm.translated_kernels(guest, cpu, model) for cpu in CPUS)
    assert plain["sdot/udot"] == 0 and plain["umull/smull"] > 0, plain
    assert dot["sdot/udot"] > 0, dot


@pytest.mark.parametrize("cpu", CPUS)
def test_check_passes_the_int8_export_on_emulated_arm(
    guest: emulated_arm.Guest, int8_export: Path, cpu: str, tmp_path: Path
) -> None:
    code, report, stderr = emulated_arm.check(guest, cpu, int8_export, tmp_path / "check")
    assert report is not None, stderr[-2000:]
    env = report["environment"]
    # The report names the emulated device, as it would a real one.
    assert "aarch64" in env["os"] and env["isa"] == ISA[cpu], (env["os"], env["isa"])
    assert env["packages"]["torch"] is None and env["packages"]["onnxruntime"]
    rows = {row["artifact"]: row for row in report["artifacts"]}
    # Both Q/DQ flavours the export writes, each judged by ONNX Runtime on the ARM core.
    assert set(rows) == {"partialnet-t0-64x64-int8.onnx", "partialnet-t0-64x64-int8-tensorrt.onnx"}
    for name, row in rows.items():
        parity = row["parity"]
        assert row["status"] == "pass", (name, parity.get("failed_rules"), stderr[-2000:])
        assert parity["images"] == 20 and parity["min_image_cosine"] >= INT8_MIN_IMAGE_COSINE
    assert code == 0, stderr[-2000:]
