"""``--precision auto`` on the trained digits t0 (64 px): the fastest candidate that holds is
placed with its selection record, and the bench prints that record."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from partialnet.bench.perf.selection import format_selection
from partialnet.export import export
from partialnet.export.gate.inputs import EVAL_IMAGES
from partialnet.export.output.manifest import Manifest, load_manifest
from partialnet.runtimes.registry import runtime_spec

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _auto(target: str, checkpoint: Path, folders, out: Path) -> tuple[Path, Manifest, list[str]]:
    """auto for one target, with the progress messages it logged."""
    train, val = folders
    handler, logger = _Messages(), logging.getLogger("partialnet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        manifest = export(
            checkpoint,
            targets=target,
            precision="auto",
            max_drop=1.0,
            output_dir=out,
            eval_data=val,
            calibration_data=train,
            calibration_images=32,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return out, manifest, handler.messages


@pytest.fixture(scope="module")
def auto_onnx(digits_checkpoint: Path, digits_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    return _auto("onnx", digits_checkpoint, digits_folders, out)


def test_auto_builds_only_what_onnxruntime_runs(auto_onnx) -> None:
    """The int8 candidate is timed on ONNX Runtime only: its TensorRT Q/DQ flavour (a second
    calibration and fallback search) is not built."""
    _, _, messages = auto_onnx
    calibrated = [m for m in messages if "int8: calibrating the" in m]
    assert calibrated == ["      int8: calibrating the onnxruntime Q/DQ ONNX"]


def test_auto_places_the_fastest_candidate_that_passed(auto_onnx) -> None:
    out, manifest, _ = auto_onnx
    (record,) = manifest.artifacts
    selection = record.selection
    assert selection["max_drop"] == 1.0
    rows = {c["precision"]: c for c in selection["candidates"]}
    assert set(rows) == {"fp32", "fp16", "int8"}
    # fp16 is tried only where ONNX Runtime computes fp16 natively (ARM64 with asimdhp);
    # elsewhere its row says why it was skipped, and it was neither built nor timed.
    fp16_native = "fp16" in runtime_spec("onnxruntime").native_precisions()
    assert bool(rows["fp16"].get("skipped")) is not fp16_native
    if not fp16_native:
        assert not rows["fp16"]["passed"] and rows["fp16"]["latency_ms"] is None
        assert "no fp16 arithmetic" in rows["fp16"]["skipped"]
    passed = [c for c in rows.values() if c["passed"]]
    assert rows["fp32"]["passed"]  # fp32 always holds on this model
    fastest = min(passed, key=lambda c: c["latency_ms"])
    assert selection["chosen"] == fastest["precision"] == record.precision
    for c in passed:  # every candidate judged on top-1 within the budget
        assert c["top1"] >= record.accuracy["reference_top1"] - 0.01 - 1e-12
    # Only the chosen artifact (with the gate reference its record names, which the commit
    # step places beside every verified artifact) is in place, recorded in the manifest on
    # disk; no scratch left.
    placed = [record.path, record.reference["path"], "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(placed)
    on_disk = load_manifest(out)
    assert on_disk.artifacts[0].selection == selection


def test_bench_prints_the_selection(auto_onnx) -> None:
    _, manifest, _ = auto_onnx
    from dataclasses import asdict

    text = format_selection([asdict(a) for a in manifest.artifacts])
    chosen = manifest.artifacts[0].selection["chosen"]
    assert f"chose {chosen}" in text and "<- chosen" in text
    candidates = manifest.artifacts[0].selection["candidates"]
    assert len(text.splitlines()) == 2 + len(candidates)
    for c in candidates:  # a skipped candidate's row gives the reason
        assert not c.get("skipped") or f"skipped: {c['skipped']}" in text


def test_auto_refuses_another_models_directory_before_building(
    digits_checkpoint: Path, digits_folders, tmp_path: Path
) -> None:
    """auto places through the export's commit step: a directory holding another model's
    export is refused (exit 2) before any candidate is built, and left as it was."""
    from partialnet.export.errors import OutputPathError

    export(None, variant="t0", imgsz=64, targets="onnx", output_dir=tmp_path, verify=False)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    train, val = digits_folders
    with pytest.raises(OutputPathError, match="--replace"):
        export(
            digits_checkpoint,
            targets="onnx",
            precision="auto",
            max_drop=1.0,
            output_dir=tmp_path,
            eval_data=val,
            calibration_data=train,
        )
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_auto_is_a_selection_not_an_artifact_precision() -> None:
    """auto is in the precision registry (the CLI's choices) but no artifact is built in it:
    no target lists it, and only export() (which hands it to partialnet.export.auto) takes it."""
    from partialnet.errors import UsageError
    from partialnet.export.cli.main import build_parser
    from partialnet.export.options import (
        ARTIFACT_PRECISIONS,
        PRECISIONS,
        ExportOptions,
        Precision,
    )
    from partialnet.export.targets import TARGETS

    assert PRECISIONS[Precision.AUTO].selection
    assert Precision.AUTO not in ARTIFACT_PRECISIONS
    assert all(Precision.AUTO not in spec.precisions for spec in TARGETS)
    assert build_parser().parse_args(["--precision", "auto"]).precision == "auto"
    with pytest.raises(UsageError, match="selects among"):
        ExportOptions(precision=Precision.AUTO)


def test_auto_openvino_tries_the_reduced_precisions_this_cpu_computes(
    digits_checkpoint: Path, digits_folders, tmp_path: Path
) -> None:
    """OpenVINO's candidates follow its OPTIMIZATION_CAPABILITIES here: the fp32 IR executed
    in bf16 where the CPU has bf16 arithmetic (judged and timed), an fp16 IR only where it
    has fp16 arithmetic; what it lacks is listed as skipped with the reason."""
    pytest.importorskip("openvino")
    native = runtime_spec("openvino").native_precisions()
    _, manifest, _ = _auto("openvino", digits_checkpoint, digits_folders, tmp_path)
    (record,) = manifest.artifacts
    rows = {c["precision"]: c for c in record.selection["candidates"]}
    assert set(rows) == {"fp32", "fp16", "bf16", "int8"}
    for precision in ("fp16", "bf16"):
        skipped = rows[precision].get("skipped", "")
        assert bool(skipped) is (precision not in native), rows[precision]
        if precision in native:  # tried: judged on top-1 and, when it held, timed
            assert rows[precision]["top1"] is not None
            assert (rows[precision]["latency_ms"] is not None) is rows[precision]["passed"]
        else:
            assert f"no {precision} arithmetic" in skipped
    if record.precision == "bf16":  # the fp32 IR, recorded as executed in bf16
        assert record.details["execution_precision"] == "bf16"
        assert record.path.endswith("-fp32.openvino")
        assert record.parity["inputs"] == EVAL_IMAGES  # judged on the gate's labelled images
