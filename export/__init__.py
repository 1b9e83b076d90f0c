"""Exporters: the inference form to every target registered in ``partialnet.export.targets``.

``export()`` is the Python API behind the ``partialnet-export`` command. SDKs are imported
only when a target needs them.
"""

from partialnet.export.api import export
from partialnet.export.errors import ExportFailure, OutputPathError, ParityFailure
from partialnet.export.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.options import ExportOptions, Precision, Target

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
