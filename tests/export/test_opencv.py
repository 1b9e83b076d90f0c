"""OpenCV's DNN module loads our ONNX and matches ONNX Runtime.

OpenCV runs in a child process: a crash while reading a graph (it segfaulted on earlier
exports) must fail one test, not kill the test session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_path, randomize

import partialnet

pytest.importorskip("cv2", reason="opencv-python-headless is not installed (test extra)")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (onnx extra)")

# OpenCV vs ONNX Runtime, relative to max |ONNX Runtime output|: two fp32 implementations
# of the same graph (different conv algorithms and summation orders). Measured: <= 1e-6 on
# t0/t1 (and a t1 backbone's four maps) at 64 px and the authors' t0 at 224 px. 1e-4 is
# the bound consumers are promised; a misread op (a gate with the wrong shape) is O(1).
REL_TOL = 1e-4

_CHILD = """
import sys
import cv2
import numpy as np
net = cv2.dnn.readNetFromONNX(sys.argv[1])
net.setInput(np.load(sys.argv[2]))
names = sys.argv[4].split(",")
outs = net.forward(names)
np.savez(sys.argv[3], **{n: np.asarray(o) for n, o in zip(names, outs)})
"""


def _export(model: torch.nn.Module, size: int, path: Path) -> Path:
    from partialnet.export.targets.onnx.convert import export_onnx

    inference = partialnet.reparameterize(model, size)
    export_onnx(inference, path, batch=1, dynamic_batch=None, opset=18, metadata={})
    return path


def _compare(onnx_path: Path, size: int, tmp_path: Path) -> dict[str, float]:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(names, {"input": x}), strict=True))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "cv.npz"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(onnx_path),
            str(tmp_path / "x.npy"),
            str(out),
            ",".join(names),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = (child.stderr.strip().splitlines() or ["no message"])[-1]
    assert child.returncode == 0, (
        f"OpenCV failed on {onnx_path.name} (exit {child.returncode}): {last}"
    )
    got = np.load(out)
    errors = {}
    for name in names:
        assert got[name].shape == want[name].shape, name
        errors[name] = float(np.abs(got[name] - want[name]).max() / np.abs(want[name]).max())
    return errors


@pytest.mark.parametrize("variant", ["t0", "t1"])
def test_opencv_matches_onnxruntime_on_random_weights(variant, tmp_path):
    torch.manual_seed(0)
    model = randomize(partialnet.create_model(variant)).eval()
    errors = _compare(_export(model, 64, tmp_path / f"{variant}.onnx"), 64, tmp_path)
    assert max(errors.values()) <= REL_TOL, errors


def test_opencv_matches_onnxruntime_on_the_authors_checkpoint(tmp_path):
    model = partialnet.load_checkpoint(fixture_path("upstream_t0_224.ckpt"))
    errors = _compare(_export(model, 224, tmp_path / "upstream_t0.onnx"), 224, tmp_path)
    assert max(errors.values()) <= REL_TOL, errors


def test_opencv_reads_every_backbone_output(tmp_path):
    torch.manual_seed(0)
    model = randomize(partialnet.create_model("t1", features_only=True)).eval()
    errors = _compare(_export(model, 64, tmp_path / "t1_features.onnx"), 64, tmp_path)
    assert list(errors) == ["feat0", "feat1", "feat2", "feat3"]
    assert max(errors.values()) <= REL_TOL, errors
