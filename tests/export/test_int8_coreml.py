"""CoreML int8: W8 weights on any OS; W8A8 refused with the reason where it cannot be made.

A two-conv ML program stands in for PartialNet: the compressor works op by op, and converting
the real model takes ~25 s on this machine (the CoreML export tests cover that conversion).
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from torch import nn

from partialnet.errors import UsageError
from partialnet.export.output.files import size_bytes
from partialnet.export.targets.coreml.int8 import quantize_coreml, w8a8_unavailable_reason

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra [coreml])")


def _mlpackage(tmp_path, target: str):
    torch.manual_seed(0)
    # 64x64x3x3 = 36,864 weights per conv: above coremltools' 2,048-element threshold.
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3)).eval()
    program = torch.export.export(model, (torch.zeros(1, 64, 16, 16),)).run_decompositions({})
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name="input", shape=(1, 64, 16, 16))],
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT32,
    )
    path = tmp_path / f"tiny-{target}.mlpackage"
    mlmodel.save(str(path))
    return path


def test_w8_quantizes_every_conv_weight(tmp_path) -> None:
    source = _mlpackage(tmp_path, "iOS16")
    out = tmp_path / "tiny-w8.mlpackage"
    facts = quantize_coreml(source, out, activations=False)
    assert facts["scheme"] == "W8" and facts["int8_weight_ops"] == 2
    # fp32 weights -> int8 plus per-channel scales: close to 4x smaller on disk.
    assert size_bytes(out) < size_bytes(source) / 3
    spec = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    ops = [
        op.type
        for function in spec.mlProgram.functions.values()
        for block in function.block_specializations.values()
        for op in block.operations
    ]
    assert ops.count("constexpr_affine_dequantize") == 2


def test_w8a8_needs_a_newer_target(tmp_path) -> None:
    reason = w8a8_unavailable_reason(_mlpackage(tmp_path, "iOS16"))
    assert reason is not None and "iOS17" in reason


@pytest.mark.skipif(platform.system() == "Darwin", reason="W8A8 calibration runs on macOS")
def test_w8a8_off_macos_is_refused_with_the_reason(tmp_path) -> None:
    source = _mlpackage(tmp_path, "iOS17")
    assert "macOS" in (w8a8_unavailable_reason(source) or "")
    calibration = [np.zeros((1, 64, 16, 16), np.float32)]
    with pytest.raises(UsageError, match="macOS"):
        quantize_coreml(source, tmp_path / "x.mlpackage", activations=True, calibration=calibration)
    assert not (tmp_path / "x.mlpackage").exists()
