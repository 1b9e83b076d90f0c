"""partialnet-export end to end: every target through the CLI, the manifest, the ONNX's
metadata and ops, the parity gate, and what it does with bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import UPSTREAM_LOGITS_MAX_REL, fixture_path

import partialnet.export.cli.main as cli
from partialnet.export.gate.parity import (
    FP16_MIN_COSINE,
    FP16_MIN_TOP1,
    FP32_MAX_REL,
    FP32_MIN_COSINE,
)
from partialnet.export.targets.onnx.convert import FORBIDDEN_OPS

MANIFEST_KEYS = {
    "target",
    "path",
    "precision",
    "input_shape",
    "dynamic_batch",
    "sha256",
    "bytes",
    "seconds",
    "parity",
}
PARITY_KEYS = {"max_abs", "max_rel", "cosine", "top1_agreement"}


def run_cli(*args: str) -> int:
    return cli.main(list(args))


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("variant", ["t0", "t1"])
def test_every_target_end_to_end(variant: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / variant
    assert run_cli("--variant", variant, "--target", "all", "--output", str(out)) == 0
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.err  # said once, plainly
    assert captured.err.count("RANDOM weights") == 1
    manifest = _manifest(out)
    assert manifest["variant"] == variant
    assert {"torch", "partialnet-export"} <= set(manifest["versions"])
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    assert set(by_target) == {"onnx", "openvino", "trt", "coreml"}
    for artifact in manifest["artifacts"]:
        assert set(artifact) >= MANIFEST_KEYS
        path = out / artifact["path"]
        assert path.exists() and artifact["bytes"] > 0
        assert artifact["input_shape"] == [1, 3, 224, 224]
    for runs_here in ("onnx", "openvino"):
        parity = by_target[runs_here]["parity"]
        assert set(parity) >= PARITY_KEYS and parity["passed"]
        assert parity["max_rel"] <= FP32_MAX_REL and parity["cosine"] >= FP32_MIN_COSINE
    assert by_target["trt"]["parity"]["status"] == "unverified"
    assert by_target["trt"]["parity"]["reason"]
    # CoreML runs on macOS, and elsewhere in the MIL interpreter: a simulation, said so.
    coreml = by_target["coreml"]
    assert coreml["parity"]["passed"] and coreml["parity"]["max_rel"] <= FP32_MAX_REL
    simulated = sys.platform != "darwin"
    assert coreml["details"].get("verification") == ("simulated" if simulated else None)
    assert coreml["parity"]["status"] == ("simulated" if simulated else "verified")
    # The table names every target with its verdict.
    for target in ("onnx", "openvino", "trt", "coreml"):
        assert target in captured.out
    # No temporary files are left beside the artifacts.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_onnx_metadata_and_lowered_ops(tmp_path: Path) -> None:
    assert (
        run_cli(
            "--variant",
            "t1",
            "--target",
            "onnx",
            "--dynamic-batch",
            "1:4:8",
            "--imgsz",
            "256,320",
            "--output",
            str(tmp_path),
            "--no-verify",
        )
        == 0
    )
    (path,) = tmp_path.glob("*.onnx")
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["variant"] == "t1"
    assert json.loads(meta["input_size"]) == [256, 320]
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(meta["classes"]) == 1000
    assert meta["precision"] == "fp32"
    assert meta["checkpoint_sha256"] == "random-weights"
    assert "partialnet-export" in meta["toolchain"]
    splits = json.loads(meta["split_indices"])
    assert splits["stages.0.0.mixer"] == [12, 36]  # t1: 48 channels, n_div 4
    assert not {n.op_type for n in model.graph.node} & FORBIDDEN_OPS
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 256, 320]
    record = _manifest(tmp_path)["artifacts"][0]
    assert record["dynamic_batch"] == [1, 4, 8]
    assert record["parity"] == {
        "status": "unverified",
        "reason": "parity check skipped (--no-verify)",
    }


def test_fp16_onnx_keeps_sensitive_ops_in_fp32(tmp_path: Path) -> None:
    assert (
        run_cli(
            "--variant", "t0", "--target", "onnx", "--precision", "fp16", "--output", str(tmp_path)
        )
        == 0
    )
    (path,) = tmp_path.glob("*.onnx")
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    for node in inferred.graph.node:
        if node.op_type == "Softmax":
            assert elem[node.output[0]] == onnx.TensorProto.FLOAT
    # Graph I/O stays float32: callers feed the same arrays at either precision.
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Conv weights are fp16, except the channel gates' (an fp32 island with its statistics).
    weights = {i.name: i.data_type for i in model.graph.initializer if len(i.dims) == 4}
    gates = {name: kind for name, kind in weights.items() if ".gate." in name}
    convs = {name: kind for name, kind in weights.items() if ".gate." not in name}
    assert gates and set(gates.values()) == {onnx.TensorProto.FLOAT}
    assert convs and set(convs.values()) == {onnx.TensorProto.FLOAT16}
    parity = _manifest(tmp_path)["artifacts"][0]["parity"]
    assert parity["passed"] and parity["cosine"] >= FP16_MIN_COSINE
    assert parity["top1_agreement"] >= FP16_MIN_TOP1


def test_upstream_checkpoint_reproduces_authors_logits(tmp_path: Path) -> None:
    ckpt = fixture_path("upstream_t0_224.ckpt")
    x = np.load(fixture_path("upstream_t0_224_input.npy"))
    ref = np.load(fixture_path("upstream_t0_224_logits.npy"))
    assert (
        run_cli(
            "--checkpoint", str(ckpt), "--target", "all", "--batch", "2", "--output", str(tmp_path)
        )
        == 0
    )
    manifest = _manifest(tmp_path)
    assert manifest["variant"] == "t0"
    assert len(manifest["checkpoint"]["sha256"]) == 64
    from partialnet.runtimes import open_runner

    by_target = {a["target"]: tmp_path / a["path"] for a in manifest["artifacts"]}
    for runtime, target in (
        ("onnxruntime", "onnx"),
        ("openvino", "openvino"),
        ("coreml", "coreml"),
    ):
        with open_runner(runtime, by_target[target]) as runner:
            out = runner.infer(x)
        bound = UPSTREAM_LOGITS_MAX_REL * np.abs(ref).max()
        assert np.abs(out - ref).max() <= bound, runtime
    assert by_target["trt"].stat().st_size > 0 and by_target["coreml"].is_dir()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--variant", "t9"], "unknown PartialNet variant 't9'"),
        (["--variant", "t0", "--imgsz", "20"], "multiples of 32"),
        (["--variant", "t0", "--target", "tflite"], "unknown target"),
        (["--variant", "t0", "--dynamic-batch", "8:4:2"], "MIN:OPT:MAX"),
        ([], "nothing to export"),
    ],
)
def test_bad_usage_exits_2(args, fragment, tmp_path: Path, capsys) -> None:
    assert run_cli(*args, "--output", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_corrupt_checkpoint_exits_2(tmp_path: Path, capsys) -> None:
    good = fixture_path("upstream_t0_224.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(good[: len(good) // 2])
    assert run_cli("--checkpoint", str(bad), "--output", str(tmp_path / "out")) == 2
    assert "bad.ckpt" in capsys.readouterr().err


def test_unwritable_output_exits_2(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert run_cli("--variant", "t0", "--output", str(blocker)) == 2
    assert "not a directory" in capsys.readouterr().err
    # Root ignores permission bits, so use a place no one can create directories in.
    assert run_cli("--variant", "t0", "--output", "/proc/partialnet-export-test") == 2
    assert "cannot write to output directory" in capsys.readouterr().err


def test_missing_sdk_names_the_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    assert run_cli("--variant", "t0", "--target", "openvino", "--output", str(tmp_path)) == 2
    assert "pip install 'partialnet-export[openvino]'" in capsys.readouterr().err


def test_failing_export_keeps_good_earlier_artifact(tmp_path: Path, monkeypatch, capsys) -> None:
    assert (
        run_cli("--variant", "t0", "--target", "onnx", "--output", str(tmp_path), "--no-verify")
        == 0
    )
    (path,) = tmp_path.glob("*.onnx")
    before = path.read_bytes()
    manifest_before = (tmp_path / "manifest.json").read_text()

    def half_written_then_crash(proto, target, *args, **kwargs):
        Path(target).write_bytes(before[: len(before) // 3])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(onnx, "save", half_written_then_crash)
    capsys.readouterr()
    assert cli.main(["--variant", "t0", "--target", "onnx", "--output", str(tmp_path)]) == 1
    assert "disk full (simulated)" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert (tmp_path / "manifest.json").read_text() == manifest_before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "manifest.json"])


def test_parity_violation_exits_1_and_places_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    from partialnet.export.gate.parity import FP32_MAX_REL
    from partialnet.runtimes.onnxruntime import OnnxRuntimeRunner

    real_infer = OnnxRuntimeRunner.infer
    monkeypatch.setattr(OnnxRuntimeRunner, "infer", lambda self, b: real_infer(self, b) * 1.01)
    assert run_cli("--variant", "t0", "--target", "onnx", "--output", str(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "parity violation" in captured.err and "FAIL" in captured.out
    # A 1% scale error is 100x the fp32 bound; the rejected artifact was never placed.
    assert 10 * FP32_MAX_REL < 0.01 / 1.01
    assert "(not placed)" in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_documents_every_option() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "partialnet.export.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--variant",
        "--checkpoint",
        "--target",
        "--precision",
        "--imgsz",
        "--batch",
        "--dynamic-batch",
        "--opset",
        "--output",
        "--no-verify",
        "--trt-compute-capability",
        "--workspace",
        "--debug",
        "(default:",
    ):
        assert option in text


def test_help_states_each_default_at_most_once() -> None:
    """An option whose help states its own default gets no second "(default: None)"."""
    parser = cli.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        text = formatter._expand_help(action) if action.help else ""
        assert text.count("(default") <= 1 and "(default: None)" not in text, text


def test_progress_is_logged_and_printed_by_the_cli(tmp_path: Path, capsys) -> None:
    """The library logs to the 'partialnet' logger; the CLI prints those lines with their
    elapsed time while it runs and leaves the logger as it found it."""
    import logging

    logger = logging.getLogger("partialnet")
    before = (logger.level, logger.propagate, list(logger.handlers))
    args = ["--variant", "t0", "--imgsz", "64", "--target", "onnx", "--no-verify"]
    assert run_cli(*args, "--output", str(tmp_path)) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.endswith("reparameterize: t0 -> inference form at 64x64") for line in err)
    assert any("] [1/1] onnx: exporting" in line for line in err)
    assert any("onnx: placed" in line for line in err)
    (random,) = [line for line in err if "RANDOM weights" in line]  # said once, as a warning
    assert random.split("] ", 1)[1].startswith("warning: ")
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
