"""PartialNet (Partial Channel Network) for deployment: the eager family, the authors'
checkpoints, and the re-parameterized inference form.

Only torch is needed to import this package; exporters, runtimes and benchmarks live in
``partialnet.export``, ``partialnet.runtimes`` and ``partialnet.bench``.
"""

from partialnet.checkpoint import load_checkpoint
from partialnet.complexity import Complexity, complexity
from partialnet.config import ModelMeta, PartialNetConfig, get_config, list_variants
from partialnet.data import ImageBatch, calibration_data, eval_data
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
from partialnet.images import LabelledImages, calibration_images, labelled_folder
from partialnet.model import PartialNet, create_model
from partialnet.reparam import reparameterize
from partialnet.transform import preprocess, preprocess_batch, preprocessing_record

__version__ = "0.1.0"

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
