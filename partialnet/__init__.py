"""PartialNet (Partial Channel Network) for deployment: the eager family, the authors'
checkpoints, and the re-parameterized inference form.

Exporters, runtimes and benchmarks live in ``partialnet.export``, ``partialnet.runtimes``
and ``partialnet.bench``. Attributes are imported on first use (PEP 562): the device-side
path (``partialnet-bench check``, ``--artifacts``) runs with numpy and one runtime, without
torch or Pillow, and importing this package must not pull them in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager, and torch-free at import: the submodule shares the function's name, and the import
# system would rebind ``partialnet.complexity`` to the module if it were first imported later.
from partialnet.complexity import Complexity, complexity
from partialnet.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ClassCountError,
    ConfigError,
    DataError,
    ImageReadError,
    InputShapeError,
    MissingDependencyError,
    PartialNetError,
    UnknownVariantError,
    UnsafeCheckpointError,
    UsageError,
)

__version__ = "0.1.0"

# Public name -> the module that defines it (imported when the name is first read).
_LAZY: dict[str, str] = {
    "load_checkpoint": "partialnet.checkpoint",
    "ModelMeta": "partialnet.config",
    "PartialNetConfig": "partialnet.config",
    "get_config": "partialnet.config",
    "list_variants": "partialnet.config",
    "ImageBatch": "partialnet.data",
    "calibration_data": "partialnet.data",
    "eval_data": "partialnet.data",
    "LabelledImages": "partialnet.images",
    "calibration_images": "partialnet.images",
    "labelled_folder": "partialnet.images",
    "PartialNet": "partialnet.model",
    "create_model": "partialnet.model",
    "reparameterize": "partialnet.reparam",
    "preprocess": "partialnet.transform",
    "preprocess_batch": "partialnet.transform",
    "preprocessing_record": "partialnet.transform",
}

if TYPE_CHECKING:  # static analysers see the real objects
    from partialnet.checkpoint import load_checkpoint
    from partialnet.config import ModelMeta, PartialNetConfig, get_config, list_variants
    from partialnet.data import ImageBatch, calibration_data, eval_data
    from partialnet.images import LabelledImages, calibration_images, labelled_folder
    from partialnet.model import PartialNet, create_model
    from partialnet.reparam import reparameterize
    from partialnet.transform import preprocess, preprocess_batch, preprocessing_record


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'partialnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later reads skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ClassCountError",
    "Complexity",
    "ConfigError",
    "DataError",
    "ImageBatch",
    "ImageReadError",
    "InputShapeError",
    "LabelledImages",
    "MissingDependencyError",
    "ModelMeta",
    "PartialNet",
    "PartialNetConfig",
    "PartialNetError",
    "UnknownVariantError",
    "UnsafeCheckpointError",
    "UsageError",
    "__version__",
    "calibration_data",
    "calibration_images",
    "complexity",
    "create_model",
    "eval_data",
    "get_config",
    "labelled_folder",
    "list_variants",
    "load_checkpoint",
    "preprocess",
    "preprocess_batch",
    "preprocessing_record",
    "reparameterize",
]
