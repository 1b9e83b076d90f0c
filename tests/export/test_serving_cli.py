"""partialnet-export --features and --triton-repo end to end (small t0 at 64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import partialnet.export.cli.main as cli
from partialnet.backbone import FEATURE_STRIDES, RULE_CLASSIFIER
from partialnet.export.gate.parity import FP32_MAX_REL, FP32_MIN_COSINE

SMALL = ["--variant", "t0", "--imgsz", "64"]


def test_backbone_export_gates_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*SMALL, "--features", "--target", "onnx,openvino,coreml", "--output", str(out)]
    assert cli.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["backbone_rule"] == RULE_CLASSIFIER
    assert {a["target"] for a in manifest["artifacts"]} == {"onnx", "openvino", "coreml"}
    for record in manifest["artifacts"]:
        assert record["path"].startswith("partialnet-t0-64x64-fp32-features")
        outputs = record["details"]["outputs"]
        assert [o["name"] for o in outputs] == ["feat0", "feat1", "feat2", "feat3"]
        assert [o["stride"] for o in outputs] == list(FEATURE_STRIDES)
        assert [o["shape"][2] for o in outputs] == [64 // s for s in FEATURE_STRIDES]
        per_output = record["parity"]["outputs"]
        assert set(per_output) == {"feat0", "feat1", "feat2", "feat3"}
        for result in per_output.values():
            assert result["passed"] and result["max_rel"] <= FP32_MAX_REL
            assert result["cosine"] >= FP32_MIN_COSINE


def test_triton_repository_from_the_cli(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out, repo = tmp_path / "out", tmp_path / "triton"
    args = [*SMALL, "--target", "onnx,openvino,trt", "--dynamic-batch", "1:2:4"]
    assert cli.main([*args, "--output", str(out), "--triton-repo", str(repo)]) == 0
    models = sorted(p.name for p in repo.iterdir())
    stem = "partialnet-t0-64x64-fp32"
    assert models == [f"{stem}_onnx", f"{stem}_openvino", f"{stem}_trt"]
    platforms = {}
    for model in models:
        config = text_format.Parse(
            (repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        assert config.name == model and config.max_batch_size == 4
        assert list(config.input[0].dims) == [3, 64, 64]  # no batch dimension when batching
        assert [o.name for o in config.output] == ["logits"]
        assert list(config.output[0].dims) == [1000]
        platforms[model.rsplit("_", 1)[1]] = (config.platform, config.backend)
        group = model_config_pb2.ModelInstanceGroup
        wanted = group.KIND_GPU if model.endswith("_trt") else group.KIND_CPU
        assert config.instance_group[0].kind == wanted
    assert platforms["onnx"][0] == "onnxruntime_onnx"
    assert platforms["trt"][0] == "tensorrt_plan"
    assert platforms["openvino"][1] == "openvino"
    assert (repo / f"{stem}_openvino" / "1" / "model.bin").is_file()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--features", "--eval-data", "/tmp"], "no classes"),
        (["--target", "coreml", "--triton-repo", "REPO"], "--triton-repo serves"),
        (["--dynamic-batch", "2:4:8", "--triton-repo", "REPO"], "batches requests from 1"),
    ],
)
def test_serving_options_are_checked_first(
    extra: list[str], fragment: str, tmp_path: Path, capsys
) -> None:
    extra = [str(tmp_path / "repo") if e == "REPO" else e for e in extra]
    out = tmp_path / "out"
    assert cli.main([*SMALL, *extra, "--output", str(out)]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "repo").exists()
