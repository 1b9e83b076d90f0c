"""A Triton Inference Server model repository around exported artifacts.

One Triton model per target, named ``<model>_<target>`` (``_onnx``, ``_openvino``,
``_trt``), each laid out as Triton expects::

    <repo>/<model>_onnx/config.pbtxt       platform onnxruntime_onnx
    <repo>/<model>_onnx/1/model.onnx
    <repo>/<model>_openvino/config.pbtxt   backend openvino
    <repo>/<model>_openvino/1/model.xml, model.bin
    <repo>/<model>_trt/config.pbtxt        platform tensorrt_plan
    <repo>/<model>_trt/1/model.plan

Configs are Triton's own ``ModelConfig`` protobuf (from ``tritonclient[grpc]``) written in
protobuf text format. Input/output names, types and dims are read from the artifact itself
(a TensorRT engine cannot be opened without a GPU, so from the ONNX it was built from).
Each model directory is written beside its final name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.files import atomic_dir, check_destination
from partialnet.export.options import Target
from partialnet.runtimes.base import import_sdk

CONFIG_NAME = "config.pbtxt"
VERSION = "1"
OV_HINTS = ("latency", "throughput")

# target -> (config field, its value, file name in the version directory, instance kind)
_LAYOUT: dict[Target, tuple[str, str, str, str]] = {
    Target.ONNX: ("platform", "onnxruntime_onnx", "model.onnx", "KIND_CPU"),
    Target.OPENVINO: ("backend", "openvino", "model.xml", "KIND_CPU"),
    Target.TRT: ("platform", "tensorrt_plan", "model.plan", "KIND_GPU"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# ONNX TensorProto element type names and OpenVINO element type names -> Triton DataType.
_ONNX_TYPES = {
    "FLOAT": "TYPE_FP32",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "DOUBLE": "TYPE_FP64",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "BOOL": "TYPE_BOOL",
}
_OV_TYPES = {
    "f32": "TYPE_FP32",
    "f16": "TYPE_FP16",
    "bf16": "TYPE_BF16",
    "f64": "TYPE_FP64",
    "i32": "TYPE_INT32",
    "i64": "TYPE_INT64",
    "u8": "TYPE_UINT8",
    "i8": "TYPE_INT8",
    "boolean": "TYPE_BOOL",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonArtifact:
    """One exported file to serve. For ``Target.TRT``, ``source_onnx`` is the ONNX the
    engine was built from (its I/O) and ``details`` the ``build_engine`` facts."""

    target: Target
    path: Path
    source_onnx: Path | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: TritonArtifact | tuple[Target | str, Path | str, Mapping[str, Any]]):
        """An artifact from ``(target, path, details)`` as the export records it; a TensorRT
        engine's source ONNX is ``details["onnx"]`` (what ``build_engine`` reports)."""
        if isinstance(item, TritonArtifact):
            return item
        target, path, details = item
        target = Target(target)
        if target is Target.OPENVINO and Path(path).is_dir():  # an IR directory: its .xml
            from partialnet.export.targets.openvino.convert import ir_xml

            path = ir_xml(Path(path))
        source = details.get("onnx") if target is Target.TRT else None
        return cls(target, Path(path), Path(source) if source else None, dict(details))


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as Triton sees it; ``-1`` marks a dynamic dimension."""

    name: str
    data_type: str  # a Triton DataType name, e.g. "TYPE_FP32"
    shape: tuple[int, ...]


def _model_config_pb2() -> Any:
    purpose = "writing a Triton repository"
    return import_sdk("tritonclient.grpc.model_config_pb2", "triton", purpose)


def _onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    onnx = import_sdk("onnx", "onnx", "reading an ONNX model's inputs")
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type)
        dtype = _ONNX_TYPES.get(kind)
        if dtype is None:
            raise ExportFailure(f"{path.name}: {value.name} has ONNX type {kind}, not servable")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, dtype, dims)

    inputs = [spec(v) for v in graph.input if v.name not in weights]
    return inputs, [spec(v) for v in graph.output]


def _openvino_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    ov = import_sdk("openvino", "openvino", "reading an IR's inputs")
    model = ov.Core().read_model(str(path))

    def spec(port: Any) -> TensorSpec:
        kind = port.get_element_type().get_type_name()
        if kind not in _OV_TYPES:
            raise ExportFailure(f"{path.name}: {port.get_any_name()} has OpenVINO type {kind}")
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), _OV_TYPES[kind], dims)

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def read_io(artifact: TritonArtifact) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of the artifact, read from the file (TensorRT: its source ONNX)."""
    if artifact.target is Target.ONNX:
        return _onnx_io(artifact.path)
    if artifact.target is Target.OPENVINO:
        return _openvino_io(artifact.path)
    if artifact.target is Target.TRT:
        if artifact.source_onnx is None or not Path(artifact.source_onnx).is_file():
            raise UsageError(
                f"the Triton config of {artifact.path.name} needs the ONNX it was built from "
                "(an engine cannot be inspected without a GPU): pass source_onnx"
            )
        return _onnx_io(Path(artifact.source_onnx))
    raise UsageError(f"Triton serves onnx, openvino and trt artifacts, not {artifact.target.value}")


def _check_batching(
    artifact: TritonArtifact, inputs: list[TensorSpec], dynamic_batch: tuple[int, int, int] | None
) -> None:
    if dynamic_batch is None:
        return
    lo, opt, hi = dynamic_batch
    if lo != 1:
        raise UsageError(
            f"dynamic batch {lo}..{hi}: Triton's dynamic batcher forms batches of 1 up to "
            "max_batch_size, so a Triton repository needs a batch range starting at 1 "
            f"(e.g. --dynamic-batch 1:{opt}:{hi})"
        )
    static = [t.name for t in inputs if not t.shape or t.shape[0] != -1]
    if static:
        raise ExportFailure(
            f"{artifact.path.name} has a fixed batch dimension on {', '.join(static)} but a "
            "dynamic batch was asked for: export it with --dynamic-batch"
        )
    profile = artifact.details.get("batch_range")
    if artifact.target is Target.TRT and profile and int(profile[-1]) < hi:
        raise ExportFailure(
            f"{artifact.path.name} was built for batches up to {profile[-1]}, not {hi}: "
            "rebuild the engine with the same --dynamic-batch"
        )


def model_config(
    name: str,
    artifact: TritonArtifact,
    *,
    dynamic_batch: tuple[int, int, int] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    ov_threads: int | None = None,
    ov_hint: str = "latency",
) -> Any:
    """The ``ModelConfig`` protobuf for ``artifact`` served as model ``name``.

    With ``dynamic_batch`` (min, opt, max): ``max_batch_size`` = max, dims without the batch
    dimension, dynamic batching preferring ``opt``. Without: ``max_batch_size`` 0 and the
    artifact's full dims. ``preprocessing`` goes to ``parameters`` as
    ``preprocessing.<key>`` (JSON for non-strings); the OpenVINO backend gets its
    ``PERFORMANCE_HINT`` and, when given, ``INFERENCE_NUM_THREADS``.
    """
    pb = _model_config_pb2()
    if ov_hint not in OV_HINTS:
        raise UsageError(f"ov_hint={ov_hint!r} is not one of: {', '.join(OV_HINTS)}")
    if ov_threads is not None and (not isinstance(ov_threads, int) or ov_threads < 1):
        raise UsageError(f"ov_threads must be a positive integer or None, got {ov_threads!r}")
    inputs, outputs = read_io(artifact)
    _check_batching(artifact, inputs, dynamic_batch)
    kind_field, kind_value, _, instance_kind = _LAYOUT[artifact.target]
    config = pb.ModelConfig(name=name, max_batch_size=dynamic_batch[2] if dynamic_batch else 0)
    setattr(config, kind_field, kind_value)
    cut = 1 if dynamic_batch else 0  # Triton adds the batch dimension itself when batching
    for spec in inputs:
        config.input.add(
            name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=spec.shape[cut:]
        )
    for spec in outputs:
        config.output.add(
            name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=spec.shape[cut:]
        )
    if dynamic_batch:
        opt = dynamic_batch[1]
        config.dynamic_batching.SetInParent()
        if 1 < opt <= dynamic_batch[2]:
            config.dynamic_batching.preferred_batch_size.append(opt)
    config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(instance_kind), count=1)
    params = {f"preprocessing.{k}": v for k, v in (preprocessing or {}).items()}
    if artifact.target is Target.OPENVINO:
        params["PERFORMANCE_HINT"] = ov_hint.upper()
        if ov_threads is not None:
            params["INFERENCE_NUM_THREADS"] = str(ov_threads)
    if artifact.target is Target.TRT and artifact.details.get("flavour"):
        params["tensorrt.flavour"] = artifact.details["flavour"]
        if artifact.details.get("compute_capability"):
            params["tensorrt.compute_capability"] = artifact.details["compute_capability"]
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        config.parameters[key].string_value = text
    return config


def config_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: Path) -> Any:
    """Parse a ``config.pbtxt`` back into a ``ModelConfig`` (strict: unknown fields fail)."""
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), _model_config_pb2().ModelConfig())


def triton_model_name(model_name: str, target: Target) -> str:
    return f"{model_name}_{target.value}"


def _copy_artifact(artifact: TritonArtifact, version_dir: Path) -> None:
    filename = _LAYOUT[artifact.target][2]
    version_dir.mkdir(parents=True)
    shutil.copyfile(artifact.path, version_dir / filename)
    if artifact.target is Target.OPENVINO:  # the weights travel with the .xml, same stem
        shutil.copyfile(artifact.path.with_suffix(".bin"), version_dir / "model.bin")


def write_triton_repository(
    repo_dir: Path,
    model_name: str,
    artifacts: Iterable[TritonArtifact | tuple[Target | str, Path | str, Mapping[str, Any]]],
    *,
    dynamic_batch: tuple[int, int, int] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    ov_threads: int | None = None,
    ov_hint: str = "latency",
) -> list[Path]:
    """Write one Triton model per artifact under ``repo_dir``; returns the model directories.

    ``artifacts`` are ``TritonArtifact``s or ``(target, path, details)`` tuples (see
    ``TritonArtifact.of``). Every config is built (every artifact read) before anything is
    written. Each
    model directory replaces an earlier one of the same name atomically; other models in
    ``repo_dir`` are left alone.
    """
    if not _NAME.match(model_name):
        raise UsageError(
            f"Triton model name {model_name!r} must be letters, digits, '_', '.' or '-' "
            "(it becomes a directory name)"
        )
    repo_dir = Path(repo_dir)
    check_destination(repo_dir, is_dir=True)
    planned = []
    for item in artifacts:
        artifact = TritonArtifact.of(item)
        if artifact.target not in _LAYOUT:
            raise UsageError(
                f"Triton serves onnx, openvino and trt artifacts, not {artifact.target.value}"
            )
        name = triton_model_name(model_name, artifact.target)
        config = model_config(
            name,
            artifact,
            dynamic_batch=dynamic_batch,
            preprocessing=preprocessing,
            ov_threads=ov_threads,
            ov_hint=ov_hint,
        )
        planned.append((artifact, name, config))
        if artifact.target is Target.TRT and artifact.details.get("flavour") == "tensorrt-rtx":
            log.warning(
                "%s: a TensorRT-RTX engine; Triton's tensorrt_plan backend loads engines "
                "of full TensorRT built for the server's GPU and TensorRT version",
                name,
            )
    repo_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for artifact, name, config in planned:
        final = repo_dir / name
        with atomic_dir(final) as staged:
            _copy_artifact(artifact, staged / VERSION)
            (staged / CONFIG_NAME).write_text(config_text(config))
        written.append(final)
    return written
