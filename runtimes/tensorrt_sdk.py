"""Locating the TensorRT SDK: full ``tensorrt`` where installed, else TensorRT for RTX.

Shared by the engine builder (partialnet.export) and the engine runner, so it lives on the
runtimes side of the layering.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from partialnet.errors import missing_dependency

FLAVOUR_TENSORRT = "tensorrt"
FLAVOUR_RTX = "tensorrt-rtx"

Progress = Callable[[str], None]


def import_tensorrt() -> tuple[ModuleType, str]:
    """Return ``(module, flavour)``, preferring full TensorRT over TensorRT for RTX."""
    try:
        import tensorrt

        return tensorrt, FLAVOUR_TENSORRT
    except (ImportError, OSError):  # OSError: wheel present but its shared libraries are not
        pass
    try:
        import tensorrt_rtx_bindings

        return tensorrt_rtx_bindings, FLAVOUR_RTX
    except (ImportError, OSError):
        pass
    raise missing_dependency("tensorrt_rtx_bindings", "tensorrt", "Building a TensorRT engine")


_LOGGER_CLASSES: dict[str, type] = {}


def make_logger(trt: ModuleType, progress: Progress | None = None) -> Any:
    """An ``ILogger`` that keeps warnings/errors for messages and prints nothing.

    INFO lines go to ``progress`` when given; VERBOSE lines are dropped. The class is made
    per module because each SDK has its own ``ILogger`` base.
    """
    cls = _LOGGER_CLASSES.get(trt.__name__)
    if cls is None:
        cls = _logger_class(trt)
        _LOGGER_CLASSES[trt.__name__] = cls
    return cls(progress)


def _logger_class(trt: ModuleType) -> type:
    sev = trt.ILogger.Severity

    class CollectingLogger(trt.ILogger):
        def __init__(self, progress: Progress | None) -> None:
            trt.ILogger.__init__(self)
            self.progress = progress
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            line = " ".join(str(msg).split())
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(line)
            elif severity == sev.WARNING:
                self.warnings.append(line)
            elif severity == sev.INFO and self.progress is not None:
                self.progress(line)

    return CollectingLogger
