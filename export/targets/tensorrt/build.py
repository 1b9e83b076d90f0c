"""Build a serialized TensorRT engine from an exported ONNX file.

Two SDKs are supported behind one API:

* ``tensorrt`` (full TensorRT, Jetson / datacenter): builds on, and for, the local GPU.
* ``tensorrt_rtx_bindings`` (TensorRT for RTX): builds ahead of time on a CPU-only machine
  for a named compute capability (``IBuilderConfig.num_compute_capabilities`` +
  ``set_compute_capability``).

The ONNX comes with plain Split nodes: the exporter's ``optimize=True`` rewrites the
SplitToSequence that dynamo emits, which TensorRT's parser rejects.

Networks are created strongly typed wherever the API has the flag, so precision comes from
the ONNX itself (an fp16 graph gives an fp16 engine); the ``BuilderFlag.FP16`` route is kept
only for old full-TensorRT releases that predate strong typing.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from partialnet.errors import (
    MissingDependencyError,
    UsageError,
)
from partialnet.export.errors import ExportFailure
from partialnet.export.options import parse_dynamic_batch
from partialnet.export.output.files import write_bytes_atomically
from partialnet.export.targets.tensorrt.target import check_workspace
from partialnet.runtimes.base import import_sdk
from partialnet.runtimes.tensorrt_sdk import (
    FLAVOUR_RTX,
    FLAVOUR_TENSORRT,
    import_tensorrt,
    make_logger,
)

log = logging.getLogger(__name__)


class TensorRTBuildError(ExportFailure, RuntimeError):
    """TensorRT could not parse the ONNX or build an engine; the message says where and why."""

    def __init__(self, message: str, *, node_name: str = "", op_type: str = "") -> None:
        super().__init__(message)
        self.node_name = node_name
        self.op_type = op_type


# ----------------------------------------------------------------------------- config


def normalize_compute_capability(text: str) -> str:
    """'SM89', 'sm_89', '8.9' and '89' all mean ``"SM89"``; '12.0' and '120' mean ``"SM120"``."""
    s = str(text).strip().lower()
    dotted = re.fullmatch(r"(\d{1,2})\.(\d)", s)
    plain = re.fullmatch(r"(?:sm_?)?(\d{2,3})", s)
    if dotted:
        return f"SM{dotted[1]}{dotted[2]}"
    if plain:
        return f"SM{plain[1]}"
    raise UsageError(
        f"compute capability {text!r} is not understood: write it like 'SM89', 'sm_89', "
        "'8.9' or '89'"
    )


def supported_compute_capabilities() -> tuple[str, ...] | None:
    """The targets the installed TensorRT-RTX can build for; None when that is not knowable
    (no SDK, or full TensorRT, which builds only for the GPU it runs on)."""
    try:
        trt, flavour = import_tensorrt()
    except MissingDependencyError:
        return None
    enum = getattr(trt, "ComputeCapability", None)
    if flavour != FLAVOUR_RTX or enum is None:
        return None
    return tuple(name for name in enum.__members__ if name.startswith("SM"))


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """How to build: target GPU generation, workspace, batch range and timing cache.

    ``timing_cache`` None means ``<engine>.timing.cache`` beside the engine.
    """

    compute_capability: str = "SM89"
    workspace_mb: int | None = None
    dynamic_batch: tuple[int, int, int] | None = None
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        cc = normalize_compute_capability(self.compute_capability)
        supported = supported_compute_capabilities()
        if supported is not None and cc not in supported:
            raise UsageError(
                f"compute capability {cc} is not a target the installed TensorRT-RTX can "
                f"build for: choose one of {', '.join(supported)}"
            )
        object.__setattr__(self, "compute_capability", cc)
        check_workspace(self.workspace_mb)
        object.__setattr__(self, "dynamic_batch", parse_dynamic_batch(self.dynamic_batch))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))


# ----------------------------------------------------------------------------- logging


def _one_line(messages: list[str], limit: int = 3) -> str:
    tail = messages[-limit:]
    return " | ".join(m[:400] for m in tail) if tail else "no error was logged"


# ----------------------------------------------------------------------------- ONNX facts


def _load_onnx_graph(onnx_path: Path) -> Any:
    onnx = import_sdk("onnx", "tensorrt", "Building a TensorRT engine")
    # Weights are not needed to read types and node names; skip external data.
    return onnx.load(str(onnx_path), load_external_data=False).graph


def onnx_precision(graph: Any) -> str:
    """'float16' when the graph input or any initializer is fp16, else 'float32'."""
    from onnx import TensorProto

    input_types = [i.type.tensor_type.elem_type for i in graph.input]
    init_types = [t.data_type for t in graph.initializer]
    return "float16" if TensorProto.FLOAT16 in input_types + init_types else "float32"


# ----------------------------------------------------------------------------- build steps


def _version_major(trt: ModuleType) -> int:
    from packaging.version import Version

    return Version(str(trt.__version__)).major


def _create_network(trt: ModuleType, flavour: str, builder: Any) -> tuple[Any, bool]:
    flags = 0
    kinds = trt.NetworkDefinitionCreationFlag
    strongly_typed = hasattr(kinds, "STRONGLY_TYPED")
    if strongly_typed:
        flags |= 1 << int(kinds.STRONGLY_TYPED)
    # Explicit batch is the only mode from TensorRT 10 on (and in RTX); older releases need it.
    if flavour == FLAVOUR_TENSORRT and _version_major(trt) < 10:
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    return builder.create_network(flags), strongly_typed


def _parser_error_text(err: Any, nodes: Any) -> tuple[str, str, str]:
    """(node name, op type, one-line text) of one parser error."""
    index = err.node()
    name = err.node_name() if hasattr(err, "node_name") else ""
    op = err.node_operator() if hasattr(err, "node_operator") else ""
    if 0 <= index < len(nodes):  # older TensorRT only gives the index into the top graph
        name = name or nodes[index].name
        op = op or nodes[index].op_type
    name = name or (f"#{index}" if index >= 0 else "")
    code = getattr(err.code(), "name", str(err.code()))
    desc = " ".join(str(err.desc()).split())
    where = f"node '{name}' ({op})" if name else "the model"
    return name, op, f"{where}: {code}: {desc}"


def _parse(trt: ModuleType, network: Any, logger: Any, onnx_path: Path, graph: Any) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    found = [_parser_error_text(parser.get_error(i), graph.node) for i in range(parser.num_errors)]
    if not found:
        raise TensorRTBuildError(
            f"TensorRT could not parse {onnx_path.name}: {_one_line(logger.errors)}"
        )
    name, op, text = found[0]
    more = f" (+{len(found) - 1} more parser errors)" if len(found) > 1 else ""
    raise TensorRTBuildError(
        f"TensorRT could not parse {onnx_path.name}: {text}{more}; replace or decompose "
        "that op in the PyTorch model (or re-export with another opset) and export again",
        node_name=name,
        op_type=op,
    )


def _add_profile(
    builder: Any, builder_config: Any, network: Any, config: TensorRTBuildConfig, onnx: Path
) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """Add the optimization profile the input needs; return (name, shape, batch range)."""
    if network.num_inputs != 1:
        raise UsageError(f"{onnx.name} has {network.num_inputs} inputs: export a one-input model")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    chw = shape[1:]
    if any(d < 0 for d in chw):
        raise UsageError(
            f"{onnx.name} input {tensor.name!r} has shape {shape} with a dynamic C/H/W: "
            "re-export with a fixed image size (only the batch axis may be dynamic)"
        )
    if config.dynamic_batch is not None and shape[0] >= 0:
        raise UsageError(
            f"{onnx.name} has a fixed batch of {shape[0]}, so dynamic_batch="
            f"{config.dynamic_batch} cannot apply: re-export the ONNX with a dynamic batch axis"
        )
    if shape[0] >= 0:
        return tensor.name, shape, (shape[0], shape[0])
    # A dynamic-batch ONNX built without dynamic_batch gets a static batch-1 engine.
    lo, opt, hi = config.dynamic_batch or (1, 1, 1)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (lo, *chw), (opt, *chw), (hi, *chw))
    builder_config.add_optimization_profile(profile)
    return tensor.name, shape, (lo, hi)


def _local_compute_capability() -> str:
    from partialnet.runtimes.cuda import CudaError, CudaUnavailable, cudart

    try:
        cuda = cudart()
        cuda.device_count()  # CudaUnavailable without a GPU
        major, minor = cuda.compute_capability(0)
    except (CudaUnavailable, CudaError):
        return "local GPU"
    return f"SM{major}{minor}"


def _target(trt: ModuleType, flavour: str, builder_config: Any, wanted: str) -> str:
    """Set the AOT target on RTX; full TensorRT always builds for the local GPU."""
    if flavour != FLAVOUR_RTX:
        return _local_compute_capability()
    builder_config.num_compute_capabilities = 1
    if not builder_config.set_compute_capability(getattr(trt.ComputeCapability, wanted), 0):
        raise TensorRTBuildError(
            f"TensorRT-RTX refused compute capability {wanted}: choose one of "
            f"{', '.join(supported_compute_capabilities() or ())}"
        )
    return wanted


RTX_TIMING_CACHE_NOTE = (
    "not used: ITimingCache is a no-op in TensorRT-RTX >= 1.2 and would force a GPU query "
    "during the CPU-only ahead-of-time build"
)


@dataclass
class _TimingCache:
    path: Path | None
    cache: Any = None
    loaded: bool = False
    note: str = ""


def _cache_refused(warning: str) -> bool:
    w = warning.lower()
    return "timing cache" in w and ("deserialize" in w or "not be used" in w)


def _attach_timing_cache(trt_config: Any, flavour: str, path: Path, logger: Any) -> _TimingCache:
    # ITimingCache is a deprecated no-op in TensorRT-RTX >= 1.2 and forces a GPU query that
    # breaks CPU-only AOT builds (NVIDIA's "Timing Cache Migration" note): skip it there.
    if flavour == FLAVOUR_RTX:
        return _TimingCache(path=None, note=RTX_TIMING_CACHE_NOTE)
    blob = path.read_bytes() if path.is_file() else b""
    seen = len(logger.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            cache = trt_config.create_timing_cache(blob)
        except Exception:  # a corrupt file may raise rather than warn
            cache = None
        rejected = cache is None or any(_cache_refused(w) for w in logger.warnings[seen:])
        if blob and rejected:
            log.debug("timing cache %s is unreadable; rebuilding it", path)
            cache = trt_config.create_timing_cache(b"")
        if not trt_config.set_timing_cache(cache, False):  # header mismatch: start afresh
            cache = trt_config.create_timing_cache(b"")
            trt_config.set_timing_cache(cache, False)
            rejected = True
    loaded = bool(blob) and not rejected
    note = "loaded" if loaded else ("rebuilt (unreadable)" if blob else "created")
    return _TimingCache(path=path, cache=cache, loaded=loaded, note=note)


def _serialize(builder: Any, network: Any, builder_config: Any, logger: Any) -> Any:
    seen = len(logger.errors)
    try:
        serialized = builder.build_serialized_network(network, builder_config)
    except Exception as exc:
        raise TensorRTBuildError(f"TensorRT failed to build the engine: {exc}") from exc
    if serialized is None or serialized.nbytes == 0:
        raise TensorRTBuildError(
            "TensorRT failed to build the engine: "
            f"{_one_line(logger.errors[seen:])}; raise workspace_mb if the error mentions "
            "workspace, else change or remove the layer it names and export again"
        )
    return serialized


# ----------------------------------------------------------------------------- entry point


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    config: TensorRTBuildConfig,
) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine and write it atomically to
    ``engine_path``. Returns the build facts. Nothing here needs (or uses) a GPU on RTX."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UsageError(f"ONNX file {onnx_path} does not exist: export the model to ONNX first")
    trt, flavour = import_tensorrt()
    graph = _load_onnx_graph(onnx_path)
    precision = onnx_precision(graph)
    logger = make_logger(trt)
    started = time.perf_counter()

    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRTBuildError(f"TensorRT could not start: {_one_line(logger.errors)}")
    network, strongly_typed = _create_network(trt, flavour, builder)
    _parse(trt, network, logger, onnx_path, graph)
    trt_config = builder.create_builder_config()
    input_name, input_shape, batch_range = _add_profile(
        builder, trt_config, network, config, onnx_path
    )
    if config.workspace_mb is not None:
        trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    target = _target(trt, flavour, trt_config, config.compute_capability)
    notes: list[str] = []
    if target != config.compute_capability:
        notes.append(
            f"full TensorRT builds for the GPU it runs on ({target}), not the requested "
            f"{config.compute_capability}; use TensorRT-RTX for ahead-of-time targets"
        )
    if flavour == FLAVOUR_RTX and config.timing_cache is not None:
        notes.append(f"timing_cache={config.timing_cache} ignored: {RTX_TIMING_CACHE_NOTE}")
    if not strongly_typed and precision == "float16" and hasattr(trt.BuilderFlag, "FP16"):
        trt_config.set_flag(trt.BuilderFlag.FP16)  # pre-strong-typing TensorRT only
    cache_path = config.timing_cache or engine_path.with_name(engine_path.name + ".timing.cache")
    timing = _attach_timing_cache(trt_config, flavour, cache_path, logger)

    serialized = _serialize(builder, network, trt_config, logger)
    write_bytes_atomically(engine_path, serialized)
    if timing.cache is not None and timing.path is not None:
        write_bytes_atomically(timing.path, timing.cache.serialize())

    return {
        "flavour": flavour,
        "tensorrt_version": str(trt.__version__),
        "onnx": str(onnx_path),
        "engine": str(engine_path),
        "compute_capability": target,
        "requested_compute_capability": config.compute_capability,
        "strongly_typed": strongly_typed,
        "precision": precision,
        "input_name": input_name,
        "input_shape": input_shape,
        "batch_range": batch_range,
        "dynamic_batch": config.dynamic_batch,
        "workspace_mb": config.workspace_mb,
        "engine_bytes": int(serialized.nbytes),
        "build_seconds": round(time.perf_counter() - started, 3),
        "timing_cache": str(timing.path) if timing.path else None,
        "timing_cache_loaded": timing.loaded,
        "timing_cache_note": timing.note,
        "warnings": notes + logger.warnings,
    }
