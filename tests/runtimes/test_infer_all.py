"""infer_all: every output by name, for a PartialNet backbone (four maps) and a classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize

import partialnet
from partialnet.runtimes import available_runtimes, open_runner

SIDE = 64
AVAILABLE = available_runtimes()
FILE_BASED = [
    pytest.param(rt, marks=pytest.mark.skipif(bool(AVAILABLE[rt]), reason=str(AVAILABLE[rt])))
    for rt in ("onnxruntime", "openvino")
]
FEATURES = ["feat0", "feat1", "feat2", "feat3"]

# fp32 parity per output, relative to that output's max |reference|: the runtimes compute
# the same fp32 arithmetic as torch in another order (blocked convs, fused GELU); measured
# on this randomized t0 at 64 px: <= 5e-7 for every map with both runtimes. 1e-5 leaves
# 20x headroom; a swapped output, a dropped stage norm or fp16 weights are >= 1e-4.
FP32_REL_TOL = 1e-5


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _onnx(model: torch.nn.Module, path: Path) -> Path:
    pytest.importorskip("onnx")
    from partialnet.export.targets.onnx.convert import export_onnx

    inference = partialnet.reparameterize(model, SIDE)
    export_onnx(inference, path, batch=2, dynamic_batch=None, opset=18, metadata={})
    return path


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize(partialnet.create_model("t0", features_only=True)).eval()


@pytest.fixture(scope="module")
def backbone_onnx(backbone, tmp_path_factory) -> Path:
    return _onnx(backbone, tmp_path_factory.mktemp("backbone") / "t0_features.onnx")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, SIDE, SIDE)).astype(np.float32)


def test_torch_runner_names_backbone_outputs_in_stride_order(backbone, batch):
    with open_runner("torch", backbone) as runner:
        outs = runner.infer_all(batch)
        first = runner.infer(batch)
    assert list(outs) == FEATURES
    assert [o.shape for o in outs.values()] == [
        (2, c, SIDE // s, SIDE // s)
        for c, s in zip((32, 64, 128, 256), (4, 8, 16, 32), strict=True)
    ]
    assert all(o.dtype == np.float32 for o in outs.values())
    np.testing.assert_array_equal(first, outs["feat0"])


def test_torch_runner_names_a_classifier_output_logits(batch):
    torch.manual_seed(0)
    model = partialnet.create_model("t0", num_classes=10).eval()
    with open_runner("torch", model) as runner:
        outs = runner.infer_all(batch)
        np.testing.assert_array_equal(runner.infer(batch), outs["logits"])
    assert list(outs) == ["logits"] and outs["logits"].shape == (2, 10)


@pytest.mark.parametrize("runtime", FILE_BASED)
def test_file_runners_return_every_backbone_output(runtime, backbone, backbone_onnx, batch):
    artifact = backbone_onnx
    if runtime == "openvino":
        import openvino as ov

        artifact = backbone_onnx.with_suffix(".xml")
        ov.save_model(ov.convert_model(str(backbone_onnx)), str(artifact), compress_to_fp16=False)
    with torch.inference_mode():
        ref = [t.numpy() for t in backbone(torch.from_numpy(batch))]
    with open_runner(runtime, str(artifact)) as runner:
        outs = runner.infer_all(batch)
        first = runner.infer(batch)
    assert list(outs) == FEATURES
    for name, want in zip(FEATURES, ref, strict=True):
        assert outs[name].shape == want.shape and outs[name].dtype == np.float32
        assert _rel(outs[name], want) <= FP32_REL_TOL, name
    np.testing.assert_array_equal(first, outs["feat0"])


@pytest.mark.parametrize("runtime", FILE_BASED)
def test_file_runners_name_a_classifier_output_logits(runtime, tmp_path, batch):
    torch.manual_seed(0)
    model = randomize(partialnet.create_model("t0", num_classes=10)).eval()
    path = _onnx(model, tmp_path / "t0.onnx")
    if runtime == "openvino":
        import openvino as ov

        xml = path.with_suffix(".xml")
        ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=False)
        path = xml
    with open_runner(runtime, str(path)) as runner:
        outs = runner.infer_all(batch)
        np.testing.assert_array_equal(runner.infer(batch), outs["logits"])
    assert list(outs) == ["logits"]
