"""partialnet-bench parity: the matrix on t0, a corrupted artifact, unavailable runtimes, usage.

One real export of t0 (ONNX, fp32 and fp16, 8 images) is shared by the tests that need
artifacts; the others run torch only or no model at all. Tolerances are the export gate's
(partialnet.export.gate.parity), asserted through its constants, never restated here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from partialnet.bench import cli, parity
from partialnet.export.gate import parity as gate
from partialnet.runtimes import available_runtimes

CELL_KEYS = {
    "variant",
    "runtime",
    "precision",
    "status",
    "max_abs",
    "max_rel",
    "cosine",
    "top1_agreement",
    "images",
    "reason",
}
NUMBERS = ("max_abs", "max_rel", "cosine", "top1_agreement", "images")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["parity", *argv])  # through the real dispatcher
    out, err = capsys.readouterr()
    return code, out, err


def _cells(directory: Path) -> list[dict]:
    return json.loads((directory / "parity.json").read_text())["cells"]


@pytest.fixture(scope="module")
def t0_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    """t0 on torch and ONNX Runtime, fp32 and fp16, 8 images: one real export per precision."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("parity")
    argv = ["--variants", "t0", "--runtimes", "torch,onnxruntime", "--precisions", "fp32,fp16"]
    argv += ["--images", "8", "--batch", "4", "--output", str(out)]
    code = parity.main(argv)
    return code, out, (out / "parity.md").read_text()


def test_t0_matrix_passes_with_numbers_within_the_gate(t0_run: tuple[int, Path, str]) -> None:
    code, out, markdown = t0_run
    assert code == 0
    report = json.loads((out / "parity.json").read_text())
    assert {"environment", "tolerances", "cells"} <= set(report)
    assert report["tolerances"]["fp32"]["max_rel"] == gate.FP32_MAX_REL
    cells = report["cells"]
    assert {(c["runtime"], c["precision"]) for c in cells} == {
        (r, p) for r in ("torch", "onnxruntime") for p in ("fp32", "fp16")
    }
    for cell in cells:
        assert set(cell) >= CELL_KEYS
        assert cell["variant"] == "t0" and cell["status"] == "pass", cell
        assert all(isinstance(cell[k], (int, float)) for k in NUMBERS), cell
        assert cell["images"] == 8
        if cell["precision"] == "fp32":
            assert cell["max_rel"] <= gate.FP32_MAX_REL and cell["cosine"] >= gate.FP32_MIN_COSINE
        else:
            assert cell["cosine"] >= gate.FP16_MIN_COSINE
            assert cell["top1_agreement"] >= gate.FP16_MIN_TOP1
    assert "| t0/fp32 | PASS cos" in markdown and "| t0/fp16 | PASS cos" in markdown
    assert report["timing"]["variants"]["t0"]["export_seconds"].keys() == {"fp32", "fp16"}
    names = sorted(p.name for p in (out / "artifacts" / "t0").glob("*.onnx"))
    assert names == ["partialnet-t0-224x224-fp16.onnx", "partialnet-t0-224x224-fp32.onnx"]


def _copy_export(t0_run: tuple[int, Path, str], tmp_path: Path) -> tuple[Path, Path]:
    artifacts = tmp_path / "t0"
    shutil.copytree(t0_run[1] / "artifacts" / "t0", artifacts)
    return artifacts, artifacts / "partialnet-t0-224x224-fp32.onnx"


def test_a_corrupted_onnx_fails_the_matrix(
    t0_run: tuple[int, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    artifacts, path = _copy_export(t0_run, tmp_path)
    model = onnx.load(str(path))
    weights = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights)
    tensor = weights[conv.input[1]]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5, tensor.name))
    onnx.save(model, str(path))  # manifest.json left as it was

    out = tmp_path / "result"
    argv = ["--artifacts", str(artifacts), "--runtimes", "onnxruntime,torch", "--images", "8"]
    code, stdout, _ = _run(capsys, *argv, "--precisions", "fp32", "--output", str(out))
    assert code == 1
    cells = {c["runtime"]: c for c in _cells(out)}
    assert cells["torch"]["status"] == "pass"  # the reference and the model are fine
    bad = cells["onnxruntime"]
    assert bad["status"] == "fail" and bad["max_rel"] > gate.FP32_MAX_REL
    assert "max_rel" in bad["reason"] and "sha256 differs" in bad["reason"]
    assert "FAIL cos" in stdout


def test_an_unreadable_artifact_is_an_error_cell(
    t0_run: tuple[int, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifacts, path = _copy_export(t0_run, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    out = tmp_path / "result"
    argv = ["--artifacts", str(artifacts), "--runtimes", "onnxruntime", "--images", "2"]
    code, stdout, _ = _run(capsys, *argv, "--precisions", "fp32", "--output", str(out))
    (cell,) = _cells(out)
    assert code == 1 and cell["status"] == "error" and cell["reason"].startswith("error: ")
    assert "\n" not in cell["reason"] and cell["cosine"] is None
    assert "ERROR [1]" in stdout


def test_artifacts_default_checks_every_listed_artifact_and_a_corrupted_coreml_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --runtimes, --artifacts checks the CoreML package its manifest lists (it was
    left out once, and a corrupted package passed as 'nothing to check'); off macOS the
    runner simulates it in the MIL interpreter."""
    reason = available_runtimes()["coreml"]
    if reason is not None:
        pytest.skip(f"CoreML cannot run here: {reason}")
    from conftest import corrupt_coreml_weight

    from partialnet.export import export

    artifacts = tmp_path / "t0"
    manifest = export(variant="t0", targets="coreml", imgsz=64, output_dir=artifacts, verify=False)
    (record,) = manifest.artifacts
    corrupt_coreml_weight(artifacts / record.path)

    out = tmp_path / "result"
    code, stdout, _ = _run(
        capsys, "--artifacts", str(artifacts), "--images", "2", "--output", str(out)
    )
    assert code == 1
    cells = {c["runtime"]: c for c in _cells(out)}
    assert set(cells) == {"torch", "coreml"}  # torch's inference form, and the one artifact
    assert cells["torch"]["status"] == "pass"
    bad = cells["coreml"]
    # 16 of the stem's weights negated is > 10x the fp32 bound (test_coreml_interpreter).
    assert bad["status"] == "fail" and bad["max_rel"] > gate.FP32_MAX_REL, bad
    assert bad["simulated"] is (sys.platform != "darwin") and "FAIL" in stdout


def test_an_artifacts_run_that_checks_no_artifact_exits_1(
    t0_run: tuple[int, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifacts, _ = _copy_export(t0_run, tmp_path)  # ONNX only: nothing for OpenVINO to run
    out = tmp_path / "result"
    argv = ["--artifacts", str(artifacts), "--runtimes", "openvino", "--images", "2"]
    code, _, err = _run(capsys, *argv, "--precisions", "fp32", "--output", str(out))
    (cell,) = _cells(out)
    assert cell["status"] == "unavailable" and "no openvino fp32 artifact" in cell["reason"]
    assert code == 1 and "checked no artifact" in err and "no openvino fp32 artifact" in err


def test_tensorrt_here_is_unavailable_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = available_runtimes()["tensorrt"]
    if reason is None:
        pytest.skip("TensorRT can run here; this test is about a machine without a GPU")
    argv = ["--variants", "t0", "--runtimes", "torch,tensorrt", "--precisions", "fp32"]
    code, stdout, _ = _run(capsys, *argv, "--images", "2", "--output", str(tmp_path))
    assert code == 0
    cells = {c["runtime"]: c for c in _cells(tmp_path)}
    assert cells["torch"]["status"] == "pass"
    trt = cells["tensorrt"]
    assert trt["status"] == "unavailable" and trt["reason"] == f"cannot run here: {reason}"
    assert all(trt[k] is None for k in NUMBERS)  # never a number that was not measured
    assert not (tmp_path / "artifacts").exists()  # nothing exported for a runtime that cannot run
    assert "n/a [1]" in stdout and "GPU" in stdout


@pytest.mark.parametrize(
    ("option", "value", "names"),
    [
        ("--runtimes", "torch,tensorflow", "onnxruntime, openvino, tensorrt, coreml"),
        ("--variants", "t9", "t0, t1, t2, s, m, l"),
        ("--precisions", "int4", "fp32, fp16, int8"),
        ("--images", "0", "positive integer"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    option: str, value: str, names: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, option, value, "--output", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and names in err and value.split(",")[-1] in err
    assert not (tmp_path / "parity.json").exists()


def test_checkpoint_and_several_variants_is_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"")
    code, _, err = _run(capsys, "--checkpoint", str(ckpt), "--variants", "t0,t1")
    assert code == 2 and "--checkpoint" in err


class _FixedBatchRunner:
    """Takes exactly ``batch`` images; returns each image's mean as its one 'logit'."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.seen: list[int] = []

    def infer(self, x: np.ndarray) -> np.ndarray:
        assert len(x) == self.batch
        self.seen.append(len(x))
        return x.reshape(len(x), -1).mean(1, keepdims=True)


def test_a_fixed_batch_artifact_gets_its_last_batch_padded_and_trimmed() -> None:
    images = np.random.default_rng(0).standard_normal((10, 3, 4, 4), dtype=np.float32)
    runner = _FixedBatchRunner(4)
    out = gate.infer_in_batches(runner.infer, images, batch=8, batch_range=(4, 4))
    assert runner.seen == [4, 4, 4] and out.shape == (10, 1)
    np.testing.assert_allclose(out[:, 0], images.reshape(10, -1).mean(1), rtol=1e-6)


def test_inputs_are_the_export_gates_first_images() -> None:
    """The images a parity cell runs (--images 12, bench's own batch) are the first 12 of
    those the export gate checks an artifact on (its 64, at the export's batch)."""
    import argparse

    import partialnet
    from partialnet.bench.parity.cells import source_images
    from partialnet.bench.parity.sources import ModelSpec, Source
    from partialnet.export.gate.inputs import load_inputs
    from partialnet.export.options import Precision

    meta = partialnet.get_config("t0").meta
    chw = (3, 64, 64)
    args = argparse.Namespace(
        images=12, batch=4, eval_data=None, calibration_data=None, calibration_images=300
    )
    cells = source_images(Source("t0", ModelSpec("t0"), chw), meta, ["fp32", "fp16"], args)
    export_gate = load_inputs(meta, chw, Precision.FP32, 8).gate  # what export() checks on
    assert cells.source == export_gate.source == gate.NOISE and cells.labels is None
    assert len(cells.images) == 12 and len(export_gate.images) == gate.PARITY_IMAGES
    np.testing.assert_array_equal(cells.images, export_gate.images[:12])


def test_backbones_are_checked_output_by_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--variants", "t0", "--features", "--runtimes", "torch,onnxruntime"]
    argv += ["--precisions", "fp32", "--images", "4", "--batch", "2", "--output", str(tmp_path)]
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0 and "worst of 4 outputs" in stdout
    cells = _cells(tmp_path)
    assert [c["outputs"] for c in cells] == [4, 4]
    assert all(c["status"] == "pass" and c["max_rel"] <= gate.FP32_MAX_REL for c in cells)
