"""Run a CoreML .mlpackage: Apple's Core ML on macOS, or simulated with the MIL interpreter.

``simulate=None`` (the default) picks Core ML on macOS and the reference interpreter
(``coreml_mil``) elsewhere; ``simulate=True`` forces the interpreter anywhere and
``simulate=False`` insists on Core ML. A simulated runner says so in ``info()``
(``device="simulated"``, ``extra["simulated"] = True``): its numbers check the program's
semantics, not what an Apple device computes, so callers must not report them as verified
on a device.

The macOS path is written against coremltools' documented ``MLModel`` API but is untested in
this project's CI, which runs on Linux. Treat a first run on a Mac as its test.
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
SIMULATED_DEVICE = "simulated"


def simulate_by_default() -> bool:
    """Core ML predicts only on macOS; everywhere else the runner simulates."""
    return sys.platform != "darwin"


class CoreMLRunner(Runner):
    name = Runtime.COREML.value

    def __init__(
        self,
        path: str | Path,
        compute_units: str = "ALL",
        simulate: bool | None = None,
        threads: int | None = None,
    ) -> None:
        """``threads`` is accepted for a uniform runner interface but controls nothing:
        Core ML schedules its own threads, and the interpreter uses numpy's BLAS pool (set
        ``OPENBLAS_NUM_THREADS`` before starting Python); ``info().extra`` says so."""
        super().__init__()
        base.check_options(threads, compute_units=(compute_units, COMPUTE_UNITS))
        self.threads = threads
        if simulate is not None and not isinstance(simulate, bool):
            raise UsageError(f"simulate must be True, False or None, got {simulate!r}")
        self.path, self.compute_units = Path(path), compute_units
        self.artifact_label = self.path.name
        self.simulate = simulate_by_default() if simulate is None else simulate
        self.model: Any = None

    def _activate(self) -> None:
        if self.simulate:
            self._activate_interpreter()
        else:
            self._activate_coreml()

    def _activate_interpreter(self) -> None:
        from .coreml_mil import MilInterpreter, import_coremltools

        ct = import_coremltools()
        base.check_artifact(self.path, "CoreML package")
        model = MilInterpreter.from_package(self.path)
        desc = model.spec.description
        self._describe(desc)
        self._precision = model.metadata.get("precision", "unknown")
        self.model, self._version = model, ct.__version__

    def _activate_coreml(self) -> None:
        if sys.platform != "darwin":
            raise RuntimeUnavailableError(
                f"CoreML prediction needs macOS; this is {platform.system()}: run the "
                f"{self.path.name} package on a Mac, or simulate it here (simulate=True, "
                "the MIL reference interpreter)"
            )
        ct = base.import_sdk("coremltools", "coreml", "the CoreML runner")
        base.check_artifact(self.path, "CoreML package")
        unit = ct.ComputeUnit[self.compute_units]
        model = ct.models.MLModel(str(self.path), compute_units=unit)
        self._describe(model.get_spec().description)
        self._precision = model.user_defined_metadata.get("precision", "unknown")
        self.model, self._version = model, ct.__version__

    def _describe(self, desc: Any) -> None:
        if desc.input[0].type.WhichOneof("Type") != "multiArrayType":
            raise UsageError(
                f"{self.path.name} takes an image input, and infer() takes float32 tensors: "
                "export it with a tensor input, or feed images to MLModel.predict (macOS) or "
                "partialnet.runtimes.coreml_mil.MilInterpreter.from_package(path).predict"
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
            self.batch_range = (
                max(1, int(ranges[0].lowerBound)),
                hi if hi > 0 else UNBOUNDED_BATCH,
            )
        elif enumerated:  # only the listed sizes really run; Core ML rejects the others
            sizes = [int(s[0]) for s in enumerated]
            self.batch_range = (min(sizes), max(sizes))
        else:
            self.batch_range = (shape[0], shape[0])
        self.input_shape = tuple(shape)
        self._input = desc.input[0].name
        self._outputs = [out.name for out in desc.output]
        self.input_dtype = np.float16 if array.dataType == _FLOAT16 else np.float32

    def _deactivate(self) -> None:
        self.model = None

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model.predict({self._input: batch})
        return {name: np.asarray(out[name], dtype=np.float32) for name in self._outputs}

    def _info(self) -> RunnerInfo:
        extra: dict[str, Any] = {"simulated": self.simulate}
        if self.threads is not None:
            extra["threads"] = f"{self.threads} asked; not controllable here (see the runner)"
        if self.simulate:
            extra.update(
                interpreter="partialnet MIL reference interpreter (numpy)",
                accumulation="float32 inside conv/matmul/reductions; each op's result "
                "rounded to the program's dtype",
                note="approximates, not reproduces, an Apple device",
                ops=self.model.op_types,
            )
        return RunnerInfo(
            runtime=self.name,
            version=self._version,
            device=SIMULATED_DEVICE if self.simulate else "apple",
            precision=self._precision,
            provider="mil-interpreter" if self.simulate else self.compute_units,
            input_shape=self.input_shape,
            batch_range=self.batch_range,
            extra=extra,
        )
