"""Run a CoreML .mlpackage with coremltools on macOS (prediction needs Apple's Core ML).

The macOS path below is written against coremltools' documented ``MLModel`` API but is
untested in this project's CI, which runs on Linux, where ``activate()`` refuses with the
reason. Treat a first run on a Mac as its test.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError

from . import base
from .base import UNBOUNDED_BATCH, Runner, RunnerInfo, Runtime, RuntimeUnavailableError

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
_FLOAT16 = 65552  # ArrayFeatureType.FLOAT16 in Core ML's FeatureTypes.proto


class CoreMLRunner(Runner):
    name = Runtime.COREML.value

    def __init__(self, path: str | Path, compute_units: str = "ALL"):
        super().__init__()
        base.check_options(compute_units=(compute_units, COMPUTE_UNITS))
        self.path, self.compute_units = Path(path), compute_units
        self.model: Any = None

    def activate(self) -> None:
        if self._active:
            return
        if sys.platform != "darwin":
            raise RuntimeUnavailableError(
                f"CoreML prediction needs macOS; this is {platform.system()}: run the "
                f"{self.path.name} package on a Mac, or use runtime 'onnxruntime' or "
                "'openvino' here (coremltools can convert, not predict, off macOS)"
            )
        ct = base.import_sdk("coremltools", "coreml", "the CoreML runner")
        base.check_artifact(self.path, "CoreML package")
        unit = ct.ComputeUnit[self.compute_units]
        model = ct.models.MLModel(str(self.path), compute_units=unit)
        desc = model.get_spec().description
        if desc.input[0].type.WhichOneof("Type") != "multiArrayType":
            raise UsageError(
                f"{self.path.name} takes an image input; export it with a tensor input"
            )
        array = desc.input[0].type.multiArrayType
        shape = [int(d) for d in array.shape]
        ranges = list(array.shapeRange.sizeRanges)
        enumerated = [list(s.shape) for s in array.enumeratedShapes.shapes]
        if ranges:  # a flexible dim is any size (-1 here); upperBound -1 means unbounded
            shape = [
                -1 if r.lowerBound != r.upperBound else d
                for r, d in zip(ranges, shape, strict=True)
            ]
            hi = int(ranges[0].upperBound)
            self._batch = (max(1, int(ranges[0].lowerBound)), hi if hi > 0 else UNBOUNDED_BATCH)
        elif enumerated:  # only the listed sizes really run; Core ML rejects the others
            sizes = [int(s[0]) for s in enumerated]
            self._batch = (min(sizes), max(sizes))
        else:
            self._batch = (shape[0], shape[0])
        self._shape = tuple(shape)
        self._names = (desc.input[0].name, desc.output[0].name)
        self._outputs = [out.name for out in desc.output]
        self._dtype = np.float16 if array.dataType == _FLOAT16 else np.float32
        self._precision = model.user_defined_metadata.get("precision", "unknown")
        self.model, self._version, self._active = model, ct.__version__, True

    def deactivate(self) -> None:
        self.model = None
        super().deactivate()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._require_active()
        base.check_batch(batch, self._shape, self._batch, self.path.name)
        out = self.model.predict({self._names[0]: batch.astype(self._dtype, copy=False)})
        return np.asarray(out[self._names[1]], dtype=np.float32)

    def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._require_active()
        base.check_batch(batch, self._shape, self._batch, self.path.name)
        out = self.model.predict({self._names[0]: batch.astype(self._dtype, copy=False)})
        return {name: np.asarray(out[name], dtype=np.float32) for name in self._outputs}

    def info(self) -> RunnerInfo:
        self._require_active()
        return RunnerInfo(
            runtime=self.name,
            version=self._version,
            device="apple",
            precision=self._precision,
            provider=self.compute_units,
            input_shape=self._shape,
            batch_range=self._batch,
        )
