"""The LiteRT runner (issue 16) on a real .tflite of a random-weight t0 at 64 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize

import partialnet
from partialnet.errors import InputShapeError, UsageError
from partialnet.runtimes import available_runtimes, open_runner

pytest.importorskip("litert_torch", reason="the LiteRT runner's model needs the [litert] extra")
pytest.importorskip("ai_edge_litert", reason="the LiteRT runner needs the [litert] extra")

SIDE = 64


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    from partialnet.export.targets.litert.convert import export_litert

    torch.manual_seed(0)
    eager = randomize(partialnet.create_model("t0", num_classes=10)).eval()
    out = tmp_path_factory.mktemp("litert-runner")
    path = out / "t0.tflite"
    inference = partialnet.reparameterize(eager, SIDE)
    meta = {"precision": "fp32", "variant": "t0"}
    export_litert(
        inference, path, batch=2, precision="fp32", nhwc=False, metadata=meta, scratch=out
    )
    return path, eager


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, SIDE, SIDE)).astype(np.float32)


def test_runner_matches_the_eager_model_and_describes_itself(tflite) -> None:
    path, eager = tflite
    x = _batch(2)
    with torch.inference_mode():
        want = eager(torch.from_numpy(x)).numpy()
    with open_runner("litert", path, threads=2) as runner:
        got = runner.infer(x)
        info = runner.info()
        assert list(runner.infer_all(x)) == ["logits"]
    # fp32 folds in another summation order: measured ~1.4e-6 of max|ref|; the gate's 1e-4.
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-4
    assert info.runtime == "litert" and info.precision == "fp32"
    assert info.input_shape == (2, 3, SIDE, SIDE) and info.batch_range == (2, 2)
    assert info.extra["threads"] == 2 and info.extra["delegate_partitions"] == 1
    assert info.provider == "XNNPACK" and info.extra["layout"] == "NCHW"


def test_builtin_kernels_without_xnnpack_give_the_same_logits(tflite) -> None:
    path, _ = tflite
    x = _batch(2)
    with open_runner("litert", path) as fast, open_runner("litert", path, xnnpack=False) as slow:
        a, b = fast.infer(x), slow.infer(x)
        assert slow.info().extra["delegate_partitions"] == 0
    # Two fp32 kernel libraries: differences are rounding only (measured < 1e-6 relative).
    assert float(np.abs(a - b).max() / np.abs(a).max()) <= 1e-5


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [((1, 3, SIDE, SIDE), "fixed batch of 2"), ((2, 1, SIDE, SIDE), "wrong channels")],
)
def test_wrong_inputs_are_refused_with_the_fix(tflite, shape, fragment) -> None:
    with open_runner("litert", tflite[0]) as runner, pytest.raises(InputShapeError, match=fragment):
        runner.infer(np.zeros(shape, np.float32))


def test_bad_options_and_inactive_use_are_refused(tflite) -> None:
    with pytest.raises(UsageError, match="threads"):
        open_runner("litert", tflite[0], threads=0)
    with pytest.raises(UsageError, match="xnnpack"):
        open_runner("litert", tflite[0], xnnpack="yes")
    with pytest.raises(RuntimeError, match="not active"):
        open_runner("litert", tflite[0]).infer(_batch(2))
    with pytest.raises(UsageError, match="LiteRT model not found"):
        open_runner("litert", tflite[0].with_name("missing.tflite")).activate()


def test_litert_is_listed_as_available() -> None:
    assert available_runtimes()["litert"] is None
