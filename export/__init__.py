"""Exporters: the inference form to every target registered in ``partialnet.export.targets``.

``export()`` is the Python API behind the ``partialnet-export`` command. SDKs are imported
only when a target needs them, and ``export`` itself (which needs torch) when first read
(PEP 562): the manifest, the gate's rules and the reference are read on devices without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from partialnet.export.errors import ExportFailure, OutputPathError, ParityFailure
from partialnet.export.output.manifest import ArtifactRecord, Manifest, load_manifest

_LAZY = {
    "export": "partialnet.export.api",
    "ExportOptions": "partialnet.export.options",
    "Precision": "partialnet.export.options",
    "Target": "partialnet.export.options",
}

if TYPE_CHECKING:
    from partialnet.export.api import export
    from partialnet.export.options import ExportOptions, Precision, Target


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'partialnet.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ArtifactRecord",
    "ExportFailure",
    "ExportOptions",
    "Manifest",
    "OutputPathError",
    "ParityFailure",
    "Precision",
    "Target",
    "export",
    "load_manifest",
]
