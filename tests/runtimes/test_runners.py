"""Every runner available here against the same tiny torch module, plus each refusal path.

The artifacts are made in the test (ONNX by torch.onnx.export, IR by openvino.convert_model)
so these tests do not depend on ``partialnet.export``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from partialnet.errors import InputShapeError, UsageError
from partialnet.runtimes import (
    Runner,
    RunnerInfo,
    Runtime,
    RuntimeUnavailableError,
    available_runtimes,
    open_runner,
)
from partialnet.runtimes.base import UNBOUNDED_BATCH

SIDE = 16
STATIC_BATCH = 2
AVAILABLE = available_runtimes()
# Every runtime that can run on this machine (torch always; the SDK ones when installed).
LOCAL = [
    pytest.param(
        rt.value,
        marks=pytest.mark.skipif(bool(AVAILABLE[rt.value]), reason=str(AVAILABLE[rt.value])),
    )
    for rt in (Runtime.TORCH, Runtime.ONNXRUNTIME, Runtime.OPENVINO)
]
FILE_BASED = LOCAL[1:]

# fp32 parity bound, relative to max |reference|: each runtime computes the same fp32
# arithmetic in a different order (im2col/direct/Winograd convs, blocked GEMM sums). The
# longest reduction here is the 512-term linear layer, whose fp32 rounding error is at most
# ~512 * 6e-8 ≈ 3e-5 in the worst case and ~sqrt(512) * 6e-8 ≈ 1.4e-6 in practice, relative
# to the magnitude summed; measured here: <= 7e-7 (onnxruntime, openvino). 1e-5 leaves ~10x
# headroom while any real defect is far above it: a wrong layout or dropped bias is O(1),
# fp16 weights (OpenVINO's save_model default) gave 4e-4, bf16 execution would give ~4e-3.
FP32_REL_TOL = 1e-5


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * (SIDE // 2) ** 2, 10),
    ).eval()


def _export_onnx(model: nn.Module, path: Path, dynamic: bool) -> None:
    # torch 2.13 has both exporters; the TorchScript one (dynamo=False) takes ~0.3 s here
    # against ~5-8 s for the torch.export one on these 2 cores, and the runners cannot tell
    # the two files apart. It is deprecated, hence the filter.
    x = torch.randn(STATIC_BATCH, 3, SIDE, SIDE)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            dynamo=False,
        )


def _to_ir(onnx_path: Path) -> Path:
    import openvino as ov

    xml = onnx_path.with_suffix(".xml")
    # save_model compresses weights to fp16 unless told not to: fp32 parity needs fp32 weights.
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _tiny_model()


@pytest.fixture(scope="module")
def artifacts(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("artifacts")
    paths = {}
    if AVAILABLE["onnxruntime"] is None or AVAILABLE["openvino"] is None:
        for kind in ("dynamic", "static"):
            paths[f"onnx_{kind}"] = out / f"tiny_{kind}.onnx"
            _export_onnx(model, paths[f"onnx_{kind}"], dynamic=kind == "dynamic")
    if AVAILABLE["openvino"] is None:
        for kind in ("dynamic", "static"):
            paths[f"ir_{kind}"] = _to_ir(paths[f"onnx_{kind}"])
    return paths


def _runner(
    runtime: str,
    model: nn.Module,
    artifacts: dict[str, Path],
    static: bool = False,
    **options: object,
) -> Runner:
    kind = "static" if static else "dynamic"
    artifact = {
        "torch": model,
        "onnxruntime": artifacts.get(f"onnx_{kind}"),
        "openvino": artifacts.get(f"ir_{kind}"),
    }[runtime]
    return open_runner(runtime, artifact, threads=1, **options)


def _batch(n: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, channels, SIDE, SIDE), dtype=np.float32)


@pytest.mark.parametrize("runtime", LOCAL)
def test_matches_torch_in_fp32(runtime: str, model: nn.Module, artifacts: dict) -> None:
    with _runner(runtime, model, artifacts) as runner:
        for n in (1, 3):
            x = _batch(n)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            out = runner.infer(x)
            assert out.dtype == np.float32 and out.shape == ref.shape
            np.testing.assert_allclose(out, ref, rtol=0, atol=FP32_REL_TOL * np.abs(ref).max())


@pytest.mark.parametrize("runtime", LOCAL)
def test_info_describes_the_open_runner(runtime: str, model: nn.Module, artifacts: dict) -> None:
    with _runner(runtime, model, artifacts) as runner:
        info = runner.info()
    assert isinstance(info, RunnerInfo)
    assert info.runtime == runtime and info.version and info.device and info.provider
    assert info.precision == "fp32"
    assert info.batch_range == (1, UNBOUNDED_BATCH)
    spatial = (-1, -1) if runtime == "torch" else (SIDE, SIDE)  # a plain module fixes no size
    assert info.input_shape == (-1, 3, *spatial)
    assert info.to_dict()["runtime"] == runtime


@pytest.mark.parametrize("runtime", LOCAL)
def test_lifecycle_and_context_manager(runtime: str, model: nn.Module, artifacts: dict) -> None:
    runner = _runner(runtime, model, artifacts)
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(_batch(1))
    with runner as same:
        assert same is runner
        first = runner.infer(_batch(1))
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(_batch(1))
    runner.activate()  # can be reopened
    np.testing.assert_array_equal(runner.infer(_batch(1)), first)
    runner.deactivate()


@pytest.mark.parametrize("runtime", FILE_BASED)
def test_static_batch_refuses_other_sizes(runtime: str, model: nn.Module, artifacts: dict) -> None:
    with _runner(runtime, model, artifacts, static=True) as runner:
        assert runner.info().batch_range == (STATIC_BATCH, STATIC_BATCH)
        assert runner.infer(_batch(STATIC_BATCH)).shape == (STATIC_BATCH, 10)
        with pytest.raises(ValueError, match="--dynamic-batch") as err:
            runner.infer(_batch(3))
    assert isinstance(err.value, InputShapeError)
    assert f"fixed batch of {STATIC_BATCH}" in str(err.value)


@pytest.mark.parametrize("runtime", LOCAL)
def test_wrong_input_is_refused(runtime: str, model: nn.Module, artifacts: dict) -> None:
    with _runner(runtime, model, artifacts) as runner:
        with pytest.raises(InputShapeError, match="channels"):
            runner.infer(_batch(1, channels=1))
        with pytest.raises(InputShapeError, match="NCHW"):
            runner.infer(_batch(1)[0])
        with pytest.raises(TypeError, match="float32"):
            runner.infer(_batch(1).astype(np.float64))


@pytest.mark.skipif(bool(AVAILABLE["onnxruntime"]), reason=str(AVAILABLE["onnxruntime"]))
def test_onnxruntime_refuses_missing_provider(model: nn.Module, artifacts: dict) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the refusal cannot be seen here")
    runner = open_runner("onnxruntime", artifacts["onnx_dynamic"], provider="cuda")
    with pytest.raises(RuntimeUnavailableError) as err:
        runner.activate()
    assert "CUDAExecutionProvider" in str(err.value)  # what was asked
    assert "CPUExecutionProvider" in str(err.value)  # what is available
    with pytest.raises(UsageError, match="cpu, cuda"):
        open_runner("onnxruntime", artifacts["onnx_dynamic"], provider="gpu")


@pytest.mark.skipif(bool(AVAILABLE["openvino"]), reason=str(AVAILABLE["openvino"]))
def test_openvino_refuses_missing_device(model: nn.Module, artifacts: dict) -> None:
    import openvino

    if any(d.startswith("GPU") for d in openvino.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU device")
    with pytest.raises(RuntimeUnavailableError, match=r"'GPU'.*CPU"):
        open_runner("openvino", artifacts["ir_dynamic"], device="GPU").activate()


@pytest.mark.skipif(sys.platform == "darwin", reason="CoreML can predict on macOS")
def test_coreml_on_device_needs_macos(tmp_path: Path) -> None:
    # Off macOS the runner simulates by default; asking for Core ML itself is refused.
    runner = open_runner("coreml", tmp_path / "tiny.mlpackage", simulate=False)
    with pytest.raises(RuntimeUnavailableError, match="macOS"):
        runner.activate()
    with pytest.raises(UsageError, match="CPU_AND_NE"):
        open_runner("coreml", tmp_path / "tiny.mlpackage", compute_units="GPU")
    with pytest.raises(UsageError, match="simulate must be"):
        open_runner("coreml", tmp_path / "tiny.mlpackage", simulate="yes")


def test_available_runtimes_covers_every_runtime() -> None:
    assert set(AVAILABLE) == {rt.value for rt in Runtime}
    assert AVAILABLE["torch"] is None
    if not torch.cuda.is_available():
        assert AVAILABLE["tensorrt"]
    if sys.platform != "darwin":  # simulated by the MIL interpreter where coremltools is
        from partialnet.runtimes.coreml_mil import coremltools_unsupported_reason

        assert AVAILABLE["coreml"] == coremltools_unsupported_reason()


def test_open_runner_refuses_bad_requests(model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="onnxruntime, openvino"):
        open_runner("tflite", tmp_path / "m.tflite")
    with pytest.raises(UsageError, match=r"torch\.nn\.Module"):
        open_runner("torch", tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="file path"):
        open_runner(Runtime.ONNXRUNTIME, model)
    with pytest.raises(UsageError, match="converts nothing"):
        open_runner("torch", model, precision="fp16")


def test_torch_runner_restores_thread_count(model: nn.Module) -> None:
    before = torch.get_num_threads()
    with open_runner("torch", model, threads=1) as runner:
        assert torch.get_num_threads() == 1 == runner.info().extra["threads"]
    assert torch.get_num_threads() == before


_NO_SDK_SCRIPT = """
import json, sys
import partialnet.runtimes as r
sdks = ["onnxruntime", "openvino", "coremltools", "tensorrt", "tensorrt_rtx", "onnx"]
loaded = sorted(set(sdks) & set(sys.modules))
sys.modules.update(dict.fromkeys(sdks))  # from here on, as if none were installed
try:
    r.open_runner("onnxruntime", "x.onnx").activate()
except ImportError as err:
    missing = f"{type(err).__name__}: {err}"
print(json.dumps({"loaded": loaded, "missing": missing, "reasons": r.available_runtimes()}))
"""


def test_import_needs_no_sdk_and_a_missing_sdk_names_its_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_SDK_SCRIPT], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    assert result["missing"].startswith("MissingDependencyError")
    assert "partialnet-export[onnx]" in result["missing"]
    assert "partialnet-export[openvino]" in result["reasons"]["openvino"]
    assert "partialnet-export[coreml]" in result["reasons"]["coreml"]
    assert result["reasons"]["torch"] is None
