"""The TensorRT runner: file, flavour and precision checks everywhere; inference on a GPU.

The GPU tests build a tiny two-output engine for the visible GPU and compare every output
with ONNX Runtime on the CPU; here (no GPU) they are skipped with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partialnet.errors import MissingDependencyError, UsageError
from partialnet.runtimes.base import RuntimeUnavailableError
from partialnet.runtimes.tensorrt import (
    TensorRTRunner,
    check_flavour,
    engine_record,
    precision_words,
    tensorrt_unavailable_reason,
)
from partialnet.runtimes.tensorrt_sdk import FLAVOUR_RTX, FLAVOUR_TENSORRT, import_tensorrt

try:
    _, INSTALLED = import_tensorrt()
except MissingDependencyError:
    INSTALLED = None
OTHER = FLAVOUR_TENSORRT if INSTALLED == FLAVOUR_RTX else FLAVOUR_RTX
needs_sdk = pytest.mark.skipif(INSTALLED is None, reason="neither tensorrt nor tensorrt_rtx")
GPU_REASON = tensorrt_unavailable_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))


def _manifest(directory: Path, engine: str, flavour: str, precision: str) -> None:
    """A manifest.json as partialnet-export writes it (only the fields the runner reads)."""
    record = {"target": "trt", "path": engine, "precision": precision, "details": {}}
    record["details"]["flavour"] = flavour
    (directory / "manifest.json").write_text(json.dumps({"artifacts": [record]}))


# ----------------------------------------------------------------------------- no GPU needed


def test_missing_engine_is_one_line_usage_error_before_any_gpu_check(tmp_path: Path) -> None:
    # On a machine without a GPU this proves the order: the file check comes first.
    with pytest.raises(UsageError) as info:
        TensorRTRunner(tmp_path / "absent.engine").activate()
    message = str(info.value)
    assert message.startswith("TensorRT engine not found: ") and "absent.engine" in message
    assert "\n" not in message


@needs_sdk
def test_engine_from_the_other_sdk_is_refused_by_its_manifest(tmp_path: Path) -> None:
    (tmp_path / "model.engine").write_bytes(b"plan bytes")  # refused before deserializing
    _manifest(tmp_path, "model.engine", OTHER, "fp16")
    with pytest.raises(RuntimeUnavailableError) as info:
        TensorRTRunner(tmp_path / "model.engine").activate()
    message = str(info.value)
    assert f"built with {OTHER}, but the installed SDK is {INSTALLED}" in message
    assert "rebuild" in message and "\n" not in message


@needs_sdk
def test_flavour_argument_wins_over_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "model.engine").write_bytes(b"plan bytes")
    _manifest(tmp_path, "model.engine", INSTALLED, "fp32")
    with pytest.raises(RuntimeUnavailableError, match=f"built with {OTHER}"):
        TensorRTRunner(tmp_path / "model.engine", flavour=OTHER).activate()


def test_unknown_flavour_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"flavour='trt' is not one of: tensorrt, tensorrt-rtx"):
        TensorRTRunner(tmp_path / "model.engine", flavour="trt")


def test_check_flavour_accepts_the_same_or_unknown() -> None:
    check_flavour(FLAVOUR_RTX, FLAVOUR_RTX, "e.engine")
    check_flavour(None, FLAVOUR_RTX, "e.engine")  # nothing recorded: nothing to refuse
    with pytest.raises(RuntimeUnavailableError):
        check_flavour(FLAVOUR_TENSORRT, FLAVOUR_RTX, "e.engine")


def test_engine_record_matches_by_path(tmp_path: Path) -> None:
    (tmp_path / "a.engine").write_bytes(b"x")
    (tmp_path / "b.engine").write_bytes(b"x")
    _manifest(tmp_path, "a.engine", FLAVOUR_RTX, "fp16")
    assert engine_record(tmp_path / "a.engine")["precision"] == "fp16"
    assert engine_record(tmp_path / "b.engine") is None
    (tmp_path / "manifest.json").write_text("{not json")
    assert engine_record(tmp_path / "a.engine") is None


@pytest.mark.parametrize(
    ("recorded", "io_dtypes", "words"),
    [
        (None, ["FLOAT", "FLOAT"], "fp32"),
        (None, ["HALF", "HALF"], "fp16"),
        (None, ["FLOAT", "HALF"], "fp16"),
        (None, ["INT8", "FLOAT"], "int8"),
        ("fp16", ["FLOAT", "FLOAT"], "fp16"),  # float32 I/O around fp16 inside: the record knows
        ("int8", ["FLOAT", "FLOAT"], "int8"),
    ],
)
def test_precision_in_the_projects_words(recorded, io_dtypes, words) -> None:
    assert precision_words(recorded, io_dtypes) == words


# ----------------------------------------------------------------------------- on a GPU


def _two_output_onnx(path: Path) -> Path:
    """conv-relu -> pooled features and a linear head: two outputs, dynamic batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27),
        "fc_w": rng.standard_normal((10, 8)) / np.sqrt(8),
        "fc_b": rng.standard_normal(10) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["c"], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["features"]),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_outputs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 8]),
        ],
        initializer=[numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from partialnet.export.targets.tensorrt.build import TensorRTBuildConfig, build_engine
    from partialnet.runtimes.cuda import cudart

    d = tmp_path_factory.mktemp("trt")
    onnx_path = _two_output_onnx(d / "model.onnx")
    major, minor = cudart().compute_capability(0)
    config = TensorRTBuildConfig(compute_capability=f"SM{major}{minor}", dynamic_batch=(1, 2, 4))
    build_engine(onnx_path, d / "model.engine", config)
    return d / "model.engine", onnx_path


def _onnxruntime(onnx_path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x}), strict=True))


@needs_gpu
def test_every_output_matches_onnxruntime(engine: tuple[Path, Path]) -> None:
    path, onnx_path = engine
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = _onnxruntime(onnx_path, x)
    with TensorRTRunner(path) as runner:
        outs = runner.infer_all(x)
        first = runner.infer(x)
        info = runner.info()
    assert set(outs) == {"logits", "features"}
    # TF32 may be used for fp32 convolutions on Ampere and newer: ~1e-3 relative at worst.
    for name, want in ref.items():
        np.testing.assert_allclose(outs[name], want, rtol=0, atol=2e-3 * np.abs(want).max())
    assert np.array_equal(first, outs[info.extra["outputs"][0]])
    assert info.precision == "fp32" and info.batch_range == (1, 4)


@needs_gpu
def test_non_contiguous_input_is_read_as_its_values(engine: tuple[Path, Path]) -> None:
    path, _ = engine
    nhwc = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    transposed = nhwc.transpose(0, 3, 1, 2)  # NCHW view over NHWC memory
    assert not transposed.flags.c_contiguous
    with TensorRTRunner(path) as runner:
        a = runner.infer_all(transposed)
        b = runner.infer_all(np.ascontiguousarray(transposed))
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@needs_gpu
def test_recorded_precision_is_reported(engine: tuple[Path, Path]) -> None:
    path, _ = engine
    _manifest(path.parent, path.name, INSTALLED, "fp16")  # what an fp16 export records
    try:
        with TensorRTRunner(path) as runner:
            info = runner.info()
        assert info.precision == "fp16" and info.extra["precision_source"] == "manifest"
    finally:
        (path.parent / "manifest.json").unlink()
