"""Run a LiteRT (.tflite) model with ``ai_edge_litert``'s interpreter, XNNPACK on by default."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError

from . import base
from .base import Runner, RunnerInfo, Runtime

METADATA_NAME = "partialnet"
"""The .tflite metadata entry holding the export's facts (JSON, as in the ONNX metadata)."""


def read_tflite_metadata(path: str | Path) -> dict[str, Any]:
    """The ``partialnet`` metadata entry of a .tflite as a dict ({} when it has none).

    Reads the flatbuffer in place (no copy of the weights), so it is cheap for any size.
    """
    schema = base.import_sdk("ai_edge_litert.schema_py_generated", "litert", "reading .tflite")
    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode("utf-8"))
    return {}


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float -> the tensor's integer type with its scale and zero point (int8 I/O models)."""
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


class LiteRTRunner(Runner):
    """``threads`` for the interpreter (None: the CPUs this process may use); ``xnnpack=False`` runs
    the builtin kernels alone (2.5-3x slower here; for comparisons).

    ``infer`` takes NCHW float32 like every runner: a channel-last artifact (``--litert-nhwc``)
    gets the batch transposed here and gives its feature maps back as NCHW, so the gate and
    the parity matrix compare it unchanged. An int8-I/O model is fed and read through its
    tensors' scale and zero point.
    """

    name = Runtime.LITERT.value

    def __init__(self, path: str | Path, threads: int | None = None, xnnpack: bool = True):
        super().__init__()
        base.check_options(threads)
        if not isinstance(xnnpack, bool):
            raise UsageError(f"xnnpack must be True or False, got {xnnpack!r}")
        # None: one thread per CPU this process may use (LiteRT's own default is 1).
        self.threads = threads or len(os.sched_getaffinity(0))
        self.path, self.xnnpack = Path(path), xnnpack
        self.interpreter: Any = None

    def _activate(self) -> None:
        lite = base.import_sdk("ai_edge_litert.interpreter", "litert", "the LiteRT runner")
        base.check_artifact(self.path, "LiteRT model")
        resolver = lite.OpResolverType
        kind = resolver.AUTO if self.xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = lite.Interpreter(
            model_path=str(self.path),
            num_threads=self.threads,
            experimental_op_resolver_type=kind,
        )
        it.allocate_tensors()
        signature = it.get_signature_runner()
        self._input = next(iter(signature.get_input_details().values()))
        # Output names as exported (logits, or feat0..feat3), in stride order.
        outputs = signature.get_output_details()
        self._outputs = {name: outputs[name] for name in sorted(outputs)}
        self._meta = read_tflite_metadata(self.path)
        self._nhwc = self._meta.get("litert_layout") == "NHWC"
        # A fixed batch: resize_tensor_input would keep the graph's reshapes at the
        # exported batch (partialnet.export.targets.litert.convert).
        shape = tuple(int(d) for d in self._input["shape"])
        if self._nhwc:
            shape = (shape[0], shape[3], shape[1], shape[2])
        self.input_shape, self.batch_range = shape, (shape[0], shape[0])
        self.artifact_label = self.path.name
        self.interpreter = it
        ops = [op["op_name"] for op in it._get_ops_details()]  # the only way to see delegation
        self._partitions = ops.count("DELEGATE")
        self._version = getattr(lite, "__version__", None) or _package_version()

    def _deactivate(self) -> None:
        self.interpreter = None

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        it, index = self.interpreter, self._input["index"]
        x = np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if self._nhwc else batch
        if self._input["dtype"] != np.float32:
            x = _quantize(x, self._input)
        it.set_tensor(index, x)
        it.invoke()
        return {name: self._read(detail) for name, detail in self._outputs.items()}

    def _read(self, detail: dict[str, Any]) -> np.ndarray:
        out = self.interpreter.get_tensor(detail["index"])
        if out.dtype != np.float32:  # an int8-I/O model: back to real values
            scale, zero = detail["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        if self._nhwc and out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime=self.name,
            version=self._version,
            device="cpu",
            precision=str(self._meta.get("precision", "fp32")),
            provider="XNNPACK" if self.xnnpack else "builtin kernels",
            input_shape=self.input_shape,
            batch_range=self.batch_range,
            extra={
                "threads": self.threads,
                "xnnpack": self.xnnpack,
                # Each partition is one hop into the delegate; ops between them run on the
                # builtin kernels (1 = the whole graph in XNNPACK).
                "delegate_partitions": self._partitions,
                "layout": "NHWC" if self._nhwc else "NCHW",
                "io_dtype": np.dtype(self._input["dtype"]).name,
            },
        )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"
