"""Triton model repositories around real t0 artifacts: every config parses back as Triton's
ModelConfig and agrees with the artifact it serves.

The artifacts' I/O is read here with ONNX Runtime and OpenVINO (not with the module under
test). No Triton server runs here: what is checked is the repository, not serving.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from conftest import randomize

import partialnet
from partialnet.errors import MissingDependencyError, UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.options import Target, parse_dynamic_batch

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] absent")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

from partialnet.export.serving.triton import (  # noqa: E402
    TritonArtifact,
    read_config,
    write_triton_repository,
)

SIDE = 64
DYNAMIC = (1, 4, 8)
PREPROCESSING = {"input_size": [SIDE, SIDE], "mean": [0.485, 0.456, 0.406], "layout": "NCHW"}
_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}
_OV_TYPES = {"f32": "TYPE_FP32", "f16": "TYPE_FP16"}


def _export(model: torch.nn.Module, directory: Path, dynamic: bool) -> dict[Target, Path]:
    from partialnet.export.targets.onnx.convert import export_onnx
    from partialnet.export.targets.openvino.convert import export_openvino, ir_xml

    directory.mkdir()
    onnx_path = directory / "model.onnx"
    export_onnx(
        partialnet.reparameterize(model, SIDE),
        onnx_path,
        batch=1,
        dynamic_batch=DYNAMIC if dynamic else None,
        opset=18,
        metadata={},
    )
    xml = directory / "model.xml"
    export_openvino(onnx_path, xml.parent / "model.openvino", compress_to_fp16=False, metadata={})
    xml = ir_xml(xml.parent / "model.openvino")
    return {Target.ONNX: onnx_path, Target.OPENVINO: xml}


def _engine(onnx_path: Path, dynamic: bool) -> tuple[Path, dict]:
    from partialnet.export.targets.tensorrt.build import (
        TensorRTBuildConfig,
        build_engine,
        import_tensorrt,
    )

    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    engine = onnx_path.with_suffix(".engine")
    config = TensorRTBuildConfig(dynamic_batch=DYNAMIC if dynamic else None)
    return engine, build_engine(onnx_path, engine, config)


@pytest.fixture(scope="module", params=["static", "dynamic"])
def classifier_artifacts(request, tmp_path_factory) -> tuple[bool, list[TritonArtifact]]:
    dynamic = request.param == "dynamic"
    torch.manual_seed(0)
    model = randomize(partialnet.create_model("t0", num_classes=10)).eval()
    files = _export(model, tmp_path_factory.mktemp("art") / request.param, dynamic)
    artifacts = [TritonArtifact(t, p) for t, p in files.items()]
    engine, facts = _engine(files[Target.ONNX], dynamic)
    # From the export's record: build_engine's facts name the ONNX the engine came from.
    trt = TritonArtifact.of(("trt", engine, facts))
    assert trt.source_onnx == files[Target.ONNX]
    artifacts.append(trt)
    return dynamic, artifacts


def _expected_io(artifact: TritonArtifact) -> tuple[list, list]:
    """(name, Triton type, full dims) per input and output, as the runtimes report them."""
    if artifact.target is Target.OPENVINO:
        model = ov.Core().read_model(str(artifact.path))

        def row(port):
            dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
            return port.get_any_name(), _OV_TYPES[port.get_element_type().get_type_name()], dims

        return [row(p) for p in model.inputs], [row(p) for p in model.outputs]
    onnx_path = artifact.source_onnx or artifact.path
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def arg(a):
        return a.name, _ORT_TYPES[a.type], [d if isinstance(d, int) else -1 for d in a.shape]

    return [arg(a) for a in session.get_inputs()], [arg(a) for a in session.get_outputs()]


def _check_against_artifact(config, artifact: TritonArtifact, dynamic: bool) -> None:
    inputs, outputs = _expected_io(artifact)
    for got, want in ((config.input, inputs), (config.output, outputs)):
        rows = [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in got]
        if dynamic:  # Triton adds the batch dimension; the artifact's must be dynamic
            assert all(dims[0] == -1 for _, _, dims in want)
            want = [(n, t, dims[1:]) for n, t, dims in want]
        assert rows == want


def test_repository_configs_match_their_artifacts(classifier_artifacts, tmp_path, caplog):
    dynamic, artifacts = classifier_artifacts
    caplog.set_level(logging.WARNING, logger="partialnet.export.serving.triton")
    written = write_triton_repository(
        tmp_path / "repo",
        "partialnet-t0",
        artifacts,
        dynamic_batch=DYNAMIC if dynamic else None,
        preprocessing=PREPROCESSING,
        ov_threads=2,
        ov_hint="throughput",
    )
    names = ["partialnet-t0_onnx", "partialnet-t0_openvino", "partialnet-t0_trt"]
    assert [p.name for p in written] == names
    layout = {
        Target.ONNX: (("platform", "onnxruntime_onnx"), ["model.onnx"], "KIND_CPU"),
        Target.OPENVINO: (("backend", "openvino"), ["model.bin", "model.xml"], "KIND_CPU"),
        Target.TRT: (("platform", "tensorrt_plan"), ["model.plan"], "KIND_GPU"),
    }
    for model_dir, artifact in zip(written, artifacts, strict=True):
        config = read_config(model_dir / "config.pbtxt")
        (field, value), files, kind = layout[artifact.target]
        assert config.name == model_dir.name
        assert getattr(config, field) == value
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == files
        assert (model_dir / "1" / files[-1]).read_bytes() == artifact.path.read_bytes()
        assert [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [kind]
        assert config.max_batch_size == (DYNAMIC[2] if dynamic else 0)
        assert config.HasField("dynamic_batching") == dynamic
        if dynamic:
            assert list(config.dynamic_batching.preferred_batch_size) == [DYNAMIC[1]]
        _check_against_artifact(config, artifact, dynamic)
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params["preprocessing.mean"] == "[0.485, 0.456, 0.406]"
        assert params["preprocessing.layout"] == "NCHW"
        if artifact.target is Target.OPENVINO:
            assert params["PERFORMANCE_HINT"] == "THROUGHPUT"
            assert params["INFERENCE_NUM_THREADS"] == "2"
        else:
            assert "PERFORMANCE_HINT" not in params
        if artifact.target is Target.TRT:
            assert params["tensorrt.flavour"] == artifact.details["flavour"]
    flavour = artifacts[-1].details["flavour"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == (flavour == "tensorrt-rtx")


def test_backbone_repository_lists_four_outputs(tmp_path):
    torch.manual_seed(0)
    model = randomize(partialnet.create_model("t0", features_only=True)).eval()
    files = _export(model, tmp_path / "art", dynamic=True)
    artifacts = [TritonArtifact(t, p) for t, p in files.items()]
    records = [(t.value, str(p), {}) for t, p in files.items()]  # as the manifest has them
    written = write_triton_repository(
        tmp_path / "repo", "t0-backbone", records, dynamic_batch=DYNAMIC
    )
    for model_dir, artifact in zip(written, artifacts, strict=True):
        config = read_config(model_dir / "config.pbtxt")
        assert [o.name for o in config.output] == ["feat0", "feat1", "feat2", "feat3"]
        assert [list(o.dims) for o in config.output] == [
            [32, 16, 16],
            [64, 8, 8],
            [128, 4, 4],
            [256, 2, 2],
        ]
        _check_against_artifact(config, artifact, dynamic=True)


def test_refusals_write_nothing(classifier_artifacts, tmp_path):
    dynamic, artifacts = classifier_artifacts
    repo = tmp_path / "repo"
    with pytest.raises(UsageError, match="model name"):
        write_triton_repository(repo, "bad/name", artifacts)
    if dynamic:
        with pytest.raises(UsageError, match="starting at 1") as refused:
            write_triton_repository(repo, "m", artifacts, dynamic_batch=(2, 4, 8))
        # The suggested fix is one the exporter's own parser takes (MIN:OPT:MAX).
        suggested = re.search(r"--dynamic-batch (\S+?)\)", str(refused.value)).group(1)
        assert parse_dynamic_batch(suggested) == (1, 4, 8)
    else:
        with pytest.raises(ExportFailure, match="fixed batch"):
            write_triton_repository(repo, "m", artifacts, dynamic_batch=DYNAMIC)
    trt_without_onnx = TritonArtifact(Target.TRT, artifacts[-1].path)
    with pytest.raises(UsageError, match="source_onnx"):
        write_triton_repository(repo, "m", [artifacts[0], trt_without_onnx])
    assert not repo.exists()


def test_rewrite_replaces_a_model_and_a_failed_one_keeps_the_old(classifier_artifacts, tmp_path):
    dynamic, artifacts = classifier_artifacts
    batch = DYNAMIC if dynamic else None
    repo = tmp_path / "repo"
    onnx_artifact = artifacts[0]
    write_triton_repository(repo, "m", [onnx_artifact], dynamic_batch=batch, preprocessing={"v": 1})
    write_triton_repository(repo, "m", [onnx_artifact], dynamic_batch=batch, preprocessing={"v": 2})
    config = read_config(repo / "m_onnx" / "config.pbtxt")
    assert config.parameters["preprocessing.v"].string_value == "2"
    # An engine that vanished before the copy: the earlier model directory survives intact.
    engine = artifacts[-1]
    write_triton_repository(repo, "m", [engine], dynamic_batch=batch)
    gone = TritonArtifact(Target.TRT, tmp_path / "gone.engine", engine.source_onnx, engine.details)
    with pytest.raises(FileNotFoundError):
        write_triton_repository(repo, "m", [gone], dynamic_batch=batch)
    plan = repo / "m_trt" / "1" / "model.plan"
    assert plan.read_bytes() == engine.path.read_bytes()
    assert sorted(p.name for p in repo.iterdir()) == ["m_onnx", "m_trt"]
