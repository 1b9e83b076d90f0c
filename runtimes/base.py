"""The Runner lifecycle every runtime shares: open an artifact, describe, infer, close."""

from __future__ import annotations

import abc
import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class Runtime(str, enum.Enum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"
    COREML = "coreml"
    LITERT = "litert"


class RuntimeUnavailableError(RuntimeError):
    """This runtime cannot run here (SDK missing, no GPU, not macOS); the message says why."""


@dataclass(frozen=True)
class RunnerInfo:
    """What a runner says about itself once open."""

    runtime: str
    version: str
    device: str
    precision: str
    provider: str = ""
    input_shape: tuple[int, ...] = ()
    batch_range: tuple[int, int] = (1, 1)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runner(abc.ABC):
    """Open with ``activate()`` (or ``with``), run ``infer(batch)``, then ``deactivate()``.

    ``infer`` takes a float32 NCHW numpy batch and returns float32 numpy logits (or, for a
    backbone, the first output). ``infer_all`` returns every output by name, in the
    artifact's output order (a classifier: ``{"logits": ...}``; a backbone: ``feat0`` ..
    ``feat3``, strides 4 to 32), each as float32.

    A template: this class owns the lifecycle (the active flag), the input checks and the
    dtype the artifact takes; a runner writes ``_activate`` (load, then set ``input_shape``,
    ``batch_range``, ``input_dtype``), ``_infer_all`` (a checked batch, already in
    ``input_dtype``), ``_info`` and, when it holds resources, ``_deactivate``.
    """

    name: str = "runner"

    def __init__(self) -> None:
        self._active = False
        self.input_shape: tuple[int, ...] = (-1, -1, -1, -1)  # -1: any size on that axis
        self.batch_range: tuple[int, int] = (1, UNBOUNDED_BATCH)
        self.input_dtype: Any = np.float32  # what the artifact's input takes
        self.artifact_label = self.name  # names the artifact in input errors

    def activate(self) -> None:
        if not self._active:
            self._activate()
            self._active = True

    def deactivate(self) -> None:
        self._deactivate()
        self._active = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The first output (the logits, or a backbone's first map)."""
        return next(iter(self.infer_all(batch).values()))

    def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._require_active()
        check_batch(batch, self.input_shape, self.batch_range, self.artifact_label)  # type: ignore[arg-type]
        return self._infer_all(batch.astype(self.input_dtype, copy=False))

    def info(self) -> RunnerInfo:
        self._require_active()
        return self._info()

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _info(self) -> RunnerInfo: ...

    def _deactivate(self) -> None:  # noqa: B027 (optional hook: most runners hold nothing extra)
        """Release what ``_activate`` holds; called on every ``deactivate()``."""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError(
                f"the {self.name} runner is not active: call activate() first "
                "or use it as a context manager (with runner: ...)"
            )


UNBOUNDED_BATCH = 2**31 - 1
"""``batch_range`` upper end of an artifact whose batch dimension has no stated limit."""


def _shape_text(shape: tuple[int, ...]) -> str:
    names = "NCHW"
    return "(" + ", ".join(names[i] if d < 0 else str(d) for i, d in enumerate(shape)) + ")"


def check_batch(
    batch: np.ndarray,
    input_shape: tuple[int, int, int, int],
    batch_range: tuple[int, int],
    artifact: str,
) -> None:
    """Refuse a batch the artifact cannot take; ``-1`` in ``input_shape`` means any size.

    ``artifact`` names what was loaded (e.g. ``"model.onnx"``) so the message can say which
    file has which fixed shape. Wrong shapes raise ``InputShapeError`` (a ``ValueError``).
    """
    from partialnet.errors import InputShapeError

    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        got = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
        raise TypeError(
            f"infer() takes a float32 numpy array, got {got}: pass np.asarray(x, np.float32)"
        )
    if batch.ndim != 4:
        raise InputShapeError(
            f"{artifact} takes an NCHW batch {_shape_text(input_shape)}, got shape "
            f"{batch.shape}: add the batch axis (x[None]) or transpose NHWC to NCHW"
        )
    for axis, what in ((1, "channels"), (2, "height"), (3, "width")):
        if input_shape[axis] >= 0 and batch.shape[axis] != input_shape[axis]:
            raise InputShapeError(
                f"{artifact} takes inputs {_shape_text(input_shape)}, got {batch.shape} "
                f"(wrong {what}): convert/resize the input, or re-export at the size you feed"
            )
    lo, hi = batch_range
    n = batch.shape[0]
    if lo == hi and n != lo:
        raise InputShapeError(
            f"{artifact} was exported with a fixed batch of {lo}, got a batch of {n}: feed "
            f"batches of {lo}, or re-export with --dynamic-batch to accept other sizes"
        )
    if not lo <= n <= hi:
        raise InputShapeError(
            f"{artifact} accepts batches of {lo} to {hi}, got {n}: re-export with "
            "--dynamic-batch and a batch range that includes it"
        )


def import_sdk(module: str, extra: str, purpose: str) -> Any:
    """Import an optional SDK; when absent, raise the error naming the pip extra.

    An ImportError raised from *inside* an installed SDK (a broken install) propagates as is.
    """
    import importlib

    from partialnet.errors import missing_dependency
    from partialnet.quiet import muted

    try:
        # What an SDK logs while importing (e.g. a warning per native library it cannot load
        # on this OS, or that this torch is newer than it was tested with) is not
        # actionable; its logger is restored afterwards.
        with muted([module.split(".")[0]]):
            return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise
        raise missing_dependency(module.split(".")[0], extra, purpose) from None


def check_options(threads: int | None = None, **choices: tuple[str, tuple[str, ...]]) -> None:
    """Refuse a non-positive thread count or an option value outside its choices.

    ``check_options(threads, device=("GPU", ("CPU", "GPU")))`` names the option in the error.
    """
    from partialnet.errors import UsageError

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be a positive integer or None, got {threads!r}")
    for option, (value, valid) in choices.items():
        if value not in valid:
            raise UsageError(f"{option}={value!r} is not one of: {', '.join(valid)}")


def check_artifact(path: str | Path, kind: str) -> Path:
    """The artifact's path, or a ``UsageError`` saying which ``kind`` of file is missing."""
    from partialnet.errors import UsageError

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{kind} not found: {path} (export it first, or check the path)")
    return path
