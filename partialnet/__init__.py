"""PartialNet (Partial Channel Network) for deployment: the eager family, the authors'
checkpoints, and the re-parameterized inference form.

Only torch is needed to import this package; exporters, runtimes and benchmarks live in
``partialnet.export``, ``partialnet.runtimes`` and ``partialnet.bench``.
"""

from partialnet.checkpoint import load_checkpoint
from partialnet.complexity import Complexity, complexity
from partialnet.config import ModelMeta, PartialNetConfig, get_config, list_variants
from partialnet.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    InputShapeError,
    MissingDependencyError,
    PartialNetError,
    UnknownVariantError,
    UnsafeCheckpointError,
    UsageError,
)
from partialnet.model import PartialNet, create_model
from partialnet.reparam import reparameterize

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Complexity",
    "ConfigError",
    "InputShapeError",
    "MissingDependencyError",
    "ModelMeta",
    "PartialNet",
    "PartialNetConfig",
    "PartialNetError",
    "UnknownVariantError",
    "UnsafeCheckpointError",
    "UsageError",
    "__version__",
    "complexity",
    "create_model",
    "get_config",
    "list_variants",
    "load_checkpoint",
    "reparameterize",
]
