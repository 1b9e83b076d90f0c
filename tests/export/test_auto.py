"""``--precision auto`` on the trained digits t0 (64 px): the fastest candidate that holds is
placed with its selection record, and the bench prints that record."""

from __future__ import annotations

from pathlib import Path

import pytest

from partialnet.bench.perf.selection import format_selection
from partialnet.export import export
from partialnet.export.manifest import load_manifest

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def auto_onnx(digits_checkpoint: Path, digits_folders, tmp_path_factory):
    train, val = digits_folders
    out = tmp_path_factory.mktemp("auto")
    manifest = export(
        digits_checkpoint,
        targets="onnx",
        precision="auto",
        max_drop=1.0,
        output_dir=out,
        eval_data=val,
        calibration_data=train,
        calibration_images=32,
    )
    return out, manifest


def test_auto_places_the_fastest_candidate_that_passed(auto_onnx) -> None:
    out, manifest = auto_onnx
    (record,) = manifest.artifacts
    selection = record.selection
    assert selection["max_drop"] == 1.0
    rows = {c["precision"]: c for c in selection["candidates"]}
    assert set(rows) == {"fp32", "fp16", "int8"}
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
    _, manifest = auto_onnx
    from dataclasses import asdict

    text = format_selection([asdict(a) for a in manifest.artifacts])
    chosen = manifest.artifacts[0].selection["chosen"]
    assert f"chose {chosen}" in text and "<- chosen" in text
    assert len(text.splitlines()) == 2 + len(manifest.artifacts[0].selection["candidates"])


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
    from partialnet.export.cli import build_parser
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
