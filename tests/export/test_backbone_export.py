"""A backbone (features_only) through the ONNX and OpenVINO exporters: four named outputs in
stride order, each matching the eager model.

t0 is covered in tests/runtimes/test_infer_all.py; t1 (GELU, spatial gate) and t2 (ReLU,
two-block first stage) cover the other block kinds. s, m and l differ from these only in
widths and depths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize

import partialnet
from partialnet.backbone import FEATURE_STRIDES, feature_names
from partialnet.runtimes import open_runner

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SIDE = 64
# Per output, relative to its max |eager value|: the inference form's exact folds computed
# in another fp32 order by another runtime. Measured for t0..l at 64 px (ONNX Runtime and
# OpenVINO, dynamic batch): <= 2.1e-6. A swapped map or a dropped norm is O(1).
FP32_REL_TOL = 1e-5


@pytest.mark.parametrize("variant", ["t1", "t2"])
def test_backbone_exports_four_maps_in_stride_order(variant, tmp_path):
    from partialnet.export.targets.onnx.convert import export_onnx
    from partialnet.export.targets.openvino.convert import export_openvino, ir_xml

    torch.manual_seed(0)
    eager = randomize(partialnet.create_model(variant, features_only=True)).eval()
    onnx_path = tmp_path / "backbone.onnx"
    export_onnx(
        partialnet.reparameterize(eager, SIDE),
        onnx_path,
        batch=1,
        dynamic_batch=(1, 2, 4),
        opset=18,
        metadata={},
    )
    xml = tmp_path / "backbone.xml"
    export_openvino(onnx_path, xml.parent / "model.openvino", compress_to_fp16=False, metadata={})
    xml = ir_xml(xml.parent / "model.openvino")
    x = np.random.default_rng(0).standard_normal((3, 3, SIDE, SIDE)).astype(np.float32)
    with torch.inference_mode():
        want = [t.numpy() for t in eager(torch.from_numpy(x))]
    for runtime, artifact in (("onnxruntime", onnx_path), ("openvino", xml)):
        with open_runner(runtime, str(artifact)) as runner:
            got = runner.infer_all(x)
        assert list(got) == feature_names()
        for (name, out), ref, stride in zip(got.items(), want, FEATURE_STRIDES, strict=True):
            assert out.shape == ref.shape and out.shape[2:] == (SIDE // stride, SIDE // stride)
            rel = float(np.abs(out - ref).max() / np.abs(ref).max())
            assert rel <= FP32_REL_TOL, (runtime, name, rel)


def test_fp16_openvino_backbone_keeps_its_output_names(tmp_path):
    # An fp16 IR's output Convert is folded away when OpenVINO compiles it, and its input's
    # tensor name ("add_2") joins the output's {"feat1", "add_2"}: a runner that took any
    # name of the compiled output failed this export ("the artifact lacks outputs feat0..").
    from partialnet.export import export

    torch.manual_seed(0)
    eager = randomize(partialnet.create_model("t0", features_only=True)).eval()
    manifest = export(
        eager,
        targets="openvino",
        precision="fp16",
        imgsz=SIDE,
        features=True,
        output_dir=tmp_path / "out",
    )
    (record,) = manifest.artifacts
    assert record.status == "ok" and record.parity["passed"], record.parity
    with open_runner("openvino", str(tmp_path / "out" / record.path), precision="fp16") as runner:
        got = runner.infer_all(np.zeros((1, 3, SIDE, SIDE), np.float32))
    assert list(got) == feature_names()
