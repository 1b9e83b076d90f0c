"""A Triton Inference Server model repository around exported artifacts.

One Triton model per served artifact, named ``<model>_<target>``: the targets served are
those whose spec declares a ``TritonBackend`` (``partialnet.export.serving.backend``), which
gives the config's platform or backend, the file's name in the version directory and how
the artifact's inputs and outputs are read. Each model is laid out as Triton expects::

    <repo>/<model>_<target>/config.pbtxt
    <repo>/<model>_<target>/1/model.<ext>   (and the files that travel with it)

Configs are Triton's own ``ModelConfig`` protobuf (from ``tritonclient[grpc]``) written in
protobuf text format. Input/output names, types and dims are read from the artifact itself,
or from the ONNX it was built from where the artifact cannot be opened here.
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
from partialnet.export.options import Target
from partialnet.export.output.files import atomic_dir, check_destination
from partialnet.export.serving.backend import IO, TensorSpec, TritonBackend
from partialnet.export.targets import TARGETS, spec_of
from partialnet.runtimes.base import import_sdk

CONFIG_NAME = "config.pbtxt"
VERSION = "1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

log = logging.getLogger(__name__)

__all__ = [
    "TensorSpec",
    "TritonArtifact",
    "config_text",
    "model_config",
    "read_config",
    "read_io",
    "served_targets",
    "triton_model_name",
    "write_triton_repository",
]


def served_targets() -> tuple[Target, ...]:
    """The targets Triton serves, in export order."""
    return tuple(spec.target for spec in TARGETS if spec.triton is not None)


def served_names(sep: str = ", ", last: str = " and ") -> str:
    """'a, b and c': the served targets' names, for messages and help."""
    names = [t.value for t in served_targets()]
    return sep.join(names[:-1]) + last + names[-1] if len(names) > 1 else "".join(names)


def _backend(target: Target) -> TritonBackend:
    backend = spec_of(target).triton
    if backend is None:
        raise UsageError(f"Triton serves {served_names()} artifacts, not {target.value}")
    return backend


@dataclass(frozen=True)
class TritonArtifact:
    """One exported file to serve. ``source_onnx`` is the ONNX the artifact was built from,
    read for its I/O where the artifact itself cannot be opened here (an engine), and
    ``details`` the builder's facts."""

    target: Target
    path: Path
    source_onnx: Path | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: TritonArtifact | tuple[Target | str, Path | str, Mapping[str, Any]]):
        """An artifact from ``(target, path, details)`` as the export records it: the file
        the backend loads, and the source ONNX from ``details["onnx"]`` where the backend
        reads the I/O from it (what the builder reports)."""
        if isinstance(item, TritonArtifact):
            return item
        target, path, details = item
        target = Target(target)
        backend = spec_of(target).triton
        if backend is None:  # refused when the repository is written
            return cls(target, Path(path), None, dict(details))
        path = backend.model_file(Path(path))
        source = details.get("onnx") if backend.io_from_source else None
        return cls(target, path, Path(source) if source else None, dict(details))


def _model_config_pb2() -> Any:
    purpose = "writing a Triton repository"
    return import_sdk("tritonclient.grpc.model_config_pb2", "triton", purpose)


def read_io(artifact: TritonArtifact) -> IO:
    """Inputs and outputs of the artifact, read from the file (or from its source ONNX)."""
    backend = _backend(artifact.target)
    if backend.io_from_source is None:
        return backend.read_io(artifact.path)
    if artifact.source_onnx is None or not Path(artifact.source_onnx).is_file():
        raise UsageError(
            f"the Triton config of {artifact.path.name} needs the ONNX it was built from "
            f"({backend.io_from_source}): pass source_onnx"
        )
    return backend.read_io(Path(artifact.source_onnx))


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
    _backend(artifact.target).check_batch(artifact.path.name, artifact.details, hi)


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
    ``preprocessing.<key>`` (JSON for non-strings); the serving options (``ov_threads``,
    ``ov_hint``) are checked whatever the artifact, and become parameters of the backend
    that takes them (``TritonBackend.parameters``).
    """
    pb = _model_config_pb2()
    options = {"ov_threads": ov_threads, "ov_hint": ov_hint}
    for spec in TARGETS:
        if spec.triton is not None and spec.triton.check_options is not None:
            spec.triton.check_options(options)
    inputs, outputs = read_io(artifact)
    _check_batching(artifact, inputs, dynamic_batch)
    backend = _backend(artifact.target)
    config = pb.ModelConfig(name=name, max_batch_size=dynamic_batch[2] if dynamic_batch else 0)
    setattr(config, backend.config_field, backend.config_value)
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
    kind = pb.ModelInstanceGroup.Kind.Value(backend.instance_kind)
    config.instance_group.add(kind=kind, count=1)
    params: dict[str, Any] = {f"preprocessing.{k}": v for k, v in (preprocessing or {}).items()}
    params |= backend.parameters(artifact.details, options)
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
    backend = _backend(artifact.target)
    version_dir.mkdir(parents=True)
    shutil.copyfile(artifact.path, version_dir / backend.filename)
    for suffix, name in backend.companions:
        shutil.copyfile(artifact.path.with_suffix(suffix), version_dir / name)


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
        caveat = _backend(artifact.target).caveat(artifact.details)
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
        if caveat is not None:
            log.warning("%s: %s", name, caveat)
    repo_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for artifact, name, config in planned:
        final = repo_dir / name
        with atomic_dir(final) as staged:
            _copy_artifact(artifact, staged / VERSION)
            (staged / CONFIG_NAME).write_text(config_text(config))
        written.append(final)
    return written
