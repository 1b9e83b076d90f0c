"""Locating the TensorRT SDK: full ``tensorrt`` where installed, else TensorRT for RTX.

Shared by the engine builder (partialnet.export) and the engine runner, so it lives on the
runtimes side of the layering.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from partialnet.errors import missing_dependency

FLAVOUR_TENSORRT = "tensorrt"
FLAVOUR_RTX = "tensorrt-rtx"

log = logging.getLogger(__name__)


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


def make_logger(trt: ModuleType) -> Any:
    """An ``ILogger`` that keeps warnings/errors for messages and prints nothing itself.

    INFO lines go to this module's logger at DEBUG (the build's chatter, not the export's
    progress); VERBOSE lines are dropped. The class is made per module because each SDK has
    its own ``ILogger`` base.
    """
    cls = _LOGGER_CLASSES.get(trt.__name__)
    if cls is None:
        cls = _logger_class(trt)
        _LOGGER_CLASSES[trt.__name__] = cls
    return cls()


def _logger_class(trt: ModuleType) -> type:
    sev = trt.ILogger.Severity

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            line = " ".join(str(msg).split())
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(line)
            elif severity == sev.WARNING:
                self.warnings.append(line)
            elif severity == sev.INFO:
                log.debug("%s", line)

    return CollectingLogger
