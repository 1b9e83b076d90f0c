"""The Runner lifecycle every runtime shares: open an artifact, describe, infer, close."""

from __future__ import annotations

import abc
import enum
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class Runtime(str, enum.Enum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"
    COREML = "coreml"


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
    backbone, the first output).
    """

    name: str = "runner"

    def __init__(self) -> None:
        self._active = False

    @abc.abstractmethod
    def activate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def info(self) -> RunnerInfo: ...

    def deactivate(self) -> None:
        self._active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
