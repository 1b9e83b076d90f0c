"""TensorRT engine builds from tiny ONNX graphs (CPU-only AOT with TensorRT-RTX).

Engines cannot be deserialized or run without a GPU, so these tests check the files and the
build facts, not outputs. Each tiny build takes ~0.1-0.2 s with TensorRT-RTX 1.7.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from partialnet.errors import MissingDependencyError, UsageError
from partialnet.export.output.files import write_bytes_atomically
from partialnet.export.targets.tensorrt.build import (
    FLAVOUR_RTX,
    TensorRTBuildConfig,
    TensorRTBuildError,
    build_engine,
    import_tensorrt,
    make_logger,
)
from partialnet.runtimes.base import RuntimeUnavailableError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

try:
    TRT, FLAVOUR = import_tensorrt()
except MissingDependencyError:
    TRT, FLAVOUR = None, ""
needs_trt = pytest.mark.skipif(TRT is None, reason="neither tensorrt nor tensorrt_rtx_bindings")

# ----------------------------------------------------------------------------- ONNX fixtures


def _weights(dtype: np.dtype) -> list:
    rng = np.random.default_rng(0)
    arrays = {
        "conv_w": rng.standard_normal((8, 3, 3, 3)),
        "conv_b": rng.standard_normal(8),
        "bn_scale": rng.uniform(0.5, 1.5, 8),
        "bn_bias": rng.standard_normal(8),
        "bn_mean": rng.standard_normal(8),
        "bn_var": rng.uniform(0.5, 1.5, 8),
        "fc_w": rng.standard_normal((10, 8)),
        "fc_b": rng.standard_normal(10),
    }
    return [numpy_helper.from_array(a.astype(dtype), name) for name, a in arrays.items()]


def make_onnx(path: Path, *, fp16: bool = False, batch: int | str = "N") -> Path:
    """conv-bn-relu-pool-linear; fp16 keeps float32 I/O with Cast nodes at both ends."""
    t = "x16" if fp16 else "input"
    nodes = [
        helper.make_node("Conv", [t, "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node(
            "BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b"], "bn"
        ),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node(
            "Gemm", ["f", "fc_w", "fc_b"], ["y" if fp16 else "logits"], "fc", transB=1
        ),
    ]
    if fp16:
        nodes.insert(0, helper.make_node("Cast", ["input"], ["x16"], "in_cast", to=10))
        nodes.append(helper.make_node("Cast", ["y"], ["logits"], "out_cast", to=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        initializer=_weights(np.float16 if fp16 else np.float32),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_unparsable_onnx(path: Path) -> Path:
    """Relu then an op from a custom domain that no TensorRT parser or plugin knows."""
    nodes = [
        helper.make_node("Relu", ["input"], ["r"], name="fine_relu"),
        helper.make_node("FrobnicateOp", ["r"], ["out"], name="mystery", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "fp32": make_onnx(d / "fp32.onnx"),
        "fp32_b1": make_onnx(d / "fp32_b1.onnx", batch=1),
        "fp16": make_onnx(d / "fp16.onnx", fp16=True),
        "bad": make_unparsable_onnx(d / "bad.onnx"),
    }


# ----------------------------------------------------------------------------- import/config


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules -> ImportError
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)
    with pytest.raises(MissingDependencyError, match=r"partialnet-export\[tensorrt\]"):
        import_tensorrt()


@needs_trt
def test_import_prefers_full_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401

        assert FLAVOUR == "tensorrt"
    except ImportError:
        assert FLAVOUR == FLAVOUR_RTX


@pytest.mark.parametrize(
    ("text", "want"),
    [("SM89", "SM89"), ("sm_89", "SM89"), ("8.9", "SM89"), ("89", "SM89"), ("12.0", "SM120")],
)
def test_compute_capability_spellings(text: str, want: str) -> None:
    assert TensorRTBuildConfig(compute_capability=text).compute_capability == want


@pytest.mark.skipif(FLAVOUR != FLAVOUR_RTX, reason="the target list comes from TensorRT-RTX")
def test_unsupported_compute_capability_lists_the_supported() -> None:
    with pytest.raises(UsageError, match=r"SM90 .*SM75, .*SM89.*SM120"):
        TensorRTBuildConfig(compute_capability="9.0")


@pytest.mark.parametrize(
    ("kwargs", "what", "fix"),
    [
        ({"compute_capability": "ampere"}, "compute capability 'ampere'", "like 'SM89'"),
        ({"workspace_mb": 0}, "--workspace 0 ", "pass e.g. 1024"),
        ({"workspace_mb": 1.5}, "--workspace 1.5 ", "pass e.g. 1024"),
        ({"dynamic_batch": (4, 2, 8)}, "dynamic batch '(4, 2, 8)'", "(e.g. 1:8:32)"),
        ({"dynamic_batch": (0, 1, 1)}, "dynamic batch '(0, 1, 1)'", "(e.g. 1:8:32)"),
        ({"dynamic_batch": (1, 8)}, "dynamic batch '(1, 8)'", "(e.g. 1:8:32)"),
    ],
)
def test_config_refuses_bad_values(kwargs: dict, what: str, fix: str) -> None:
    # The message names the rejected value, then the fix, on one line.
    with pytest.raises(UsageError) as info:
        TensorRTBuildConfig(**kwargs)
    message = str(info.value)
    assert message.startswith(what) and fix in message.split(":", 1)[1], message
    assert "\n" not in message


# ----------------------------------------------------------------------------- builds


@needs_trt
@pytest.mark.parametrize("cc", ["SM89", "SM120"])
@pytest.mark.parametrize(
    ("model", "dynamic", "precision", "batch_range"),
    [
        ("fp32", None, "float32", (1, 1)),
        ("fp32", (1, 4, 8), "float32", (1, 8)),
        ("fp16", None, "float16", (1, 1)),
    ],
    ids=["fp32-static", "fp32-dynamic", "fp16"],
)
def test_build(models, tmp_path, caplog, cc, model, dynamic, precision, batch_range) -> None:
    engine = tmp_path / "model.engine"
    caplog.set_level(logging.DEBUG, logger="partialnet.runtimes.tensorrt_sdk")
    config = TensorRTBuildConfig(compute_capability=cc, workspace_mb=256, dynamic_batch=dynamic)
    facts = build_engine(models[model], engine, config)
    lines = [r for r in caplog.records if r.name == "partialnet.runtimes.tensorrt_sdk"]

    assert engine.is_file() and engine.stat().st_size == facts["engine_bytes"] > 0
    assert facts["flavour"] == FLAVOUR and facts["strongly_typed"] is True
    assert facts["precision"] == precision
    assert facts["dynamic_batch"] == dynamic and facts["batch_range"] == batch_range
    assert facts["input_name"] == "input" and facts["input_shape"] == (-1, 3, 32, 32)
    if FLAVOUR == FLAVOUR_RTX:
        assert facts["compute_capability"] == cc
    assert lines, "TensorRT's INFO lines should reach the logger (at DEBUG)"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    print(f"{cc} {model} dynamic={dynamic}: {facts['build_seconds']:.2f} s")


@needs_trt
def _stored_as(plan: bytes, weights: np.ndarray) -> set[str]:
    """The dtypes in which ``weights`` appear verbatim in a serialized engine."""
    return {
        dtype.__name__
        for dtype in (np.float32, np.float16)
        if np.ascontiguousarray(weights.astype(dtype)).tobytes() in plan
    }


def test_fp16_engine_differs_from_fp32(models, tmp_path) -> None:
    """Strong typing keeps the fp16 ONNX's types: read from the engines themselves.

    Without a GPU an engine cannot be deserialized (nor inspected), but its plan holds the
    classifier's weights verbatim (measured with TensorRT-RTX 1.7: fc_w's 80 values, as the
    ONNX has them): float32 bytes in the fp32 engine, float16 bytes in the fp16 one. An
    engine that ignored the fp16 graph's types would store them as float32 (or both).
    """
    config = TensorRTBuildConfig()
    a = build_engine(models["fp32"], tmp_path / "a.engine", config)
    b = build_engine(models["fp16"], tmp_path / "b.engine", config)
    plans = {p: (tmp_path / f"{p}.engine").read_bytes() for p in ("a", "b")}
    assert plans["a"] != plans["b"]
    fc_w = next(numpy_helper.to_array(w) for w in _weights(np.float64) if w.name == "fc_w")
    if not _stored_as(plans["a"], fc_w):
        pytest.skip(f"{FLAVOUR} {TRT.__version__} does not store the weights verbatim in a plan")
    assert _stored_as(plans["a"], fc_w) == {"float32"}
    assert _stored_as(plans["b"], fc_w) == {"float16"}
    assert (a["precision"], b["precision"]) == ("float32", "float16")


@needs_trt
def test_second_build_and_timing_cache(models, tmp_path) -> None:
    engine = tmp_path / "model.engine"
    cache = tmp_path / "model.engine.timing.cache"
    first = build_engine(models["fp32"], engine, TensorRTBuildConfig())
    second = build_engine(models["fp32"], engine, TensorRTBuildConfig())
    assert second["engine_bytes"] == first["engine_bytes"]
    if FLAVOUR == FLAVOUR_RTX:
        # ITimingCache is a no-op in TensorRT-RTX and needs a GPU: it is deliberately unused.
        assert first["timing_cache"] is None and not second["timing_cache_loaded"]
        assert "no-op" in second["timing_cache_note"] and not cache.exists()
    else:
        assert cache.is_file() and first["timing_cache"] == str(cache)
        assert not first["timing_cache_loaded"] and second["timing_cache_loaded"]


@needs_trt
def test_corrupt_timing_cache_is_rebuilt(tmp_path) -> None:
    """The full-TensorRT cache path, driven directly: garbage must not break the build."""
    from partialnet.export.targets.tensorrt.build import _attach_timing_cache

    cache = tmp_path / "x.timing.cache"
    cache.write_bytes(b"not a timing cache" * 8)
    logger = make_logger(TRT)
    config = TRT.Builder(logger).create_builder_config()
    got = _attach_timing_cache(config, "tensorrt", cache, logger)
    assert got.cache is not None and not got.loaded and got.note == "rebuilt (unreadable)"


@needs_trt
def test_dynamic_batch_needs_a_dynamic_onnx(models, tmp_path) -> None:
    with pytest.raises(UsageError, match=r"fixed batch of 1.*dynamic batch axis"):
        build_engine(
            models["fp32_b1"], tmp_path / "e", TensorRTBuildConfig(dynamic_batch=(1, 2, 4))
        )


# ----------------------------------------------------------------------------- failures


@needs_trt
def test_parse_failure_names_node_and_op(models, tmp_path) -> None:
    with pytest.raises(TensorRTBuildError) as info:
        build_engine(models["bad"], tmp_path / "bad.engine", TensorRTBuildConfig())
    message = str(info.value)
    assert "'mystery'" in message and "FrobnicateOp" in message and "\n" not in message
    assert (info.value.node_name, info.value.op_type) == ("mystery", "FrobnicateOp")
    assert not (tmp_path / "bad.engine").exists()


@needs_trt
def test_builder_failure_reports_logged_errors(models, tmp_path) -> None:
    # 1 MiB of workspace is too little for any tactic: the builder returns None.
    with pytest.raises(TensorRTBuildError, match="workspace"):
        build_engine(models["fp32"], tmp_path / "e", TensorRTBuildConfig(workspace_mb=1))


@needs_trt
def test_failed_builds_leave_the_previous_engine_untouched(models, tmp_path) -> None:
    engine = tmp_path / "model.engine"
    build_engine(models["fp32"], engine, TensorRTBuildConfig())
    good = engine.read_bytes()
    with pytest.raises(TensorRTBuildError):
        build_engine(models["bad"], engine, TensorRTBuildConfig())
    with pytest.raises(TensorRTBuildError):
        build_engine(models["fp32"], engine, TensorRTBuildConfig(workspace_mb=1))
    assert engine.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine"]


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch) -> None:
    target = tmp_path / "model.engine"
    target.write_bytes(b"old")

    def broken_replace(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomically(target, b"new engine")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.engine"]


# ----------------------------------------------------------------------------- runner


@needs_trt
def test_runner_refuses_without_gpu(models, tmp_path) -> None:
    from partialnet.runtimes.tensorrt import TensorRTRunner, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("a CUDA GPU is visible: the refusal path does not apply")
    engine = tmp_path / "model.engine"
    build_engine(models["fp32"], engine, TensorRTBuildConfig())
    assert "NVIDIA GPU" in reason
    # CUDA's own words: no library (libcudart), or no GPU / driver (cudaError...).
    with pytest.raises(
        RuntimeUnavailableError, match=r"CUDA sees no GPU here: cudaError|libcudart"
    ):
        TensorRTRunner(engine).activate()
