"""Image folders to model-ready arrays: what ``--eval-data`` and ``--calibration-data`` load.

Everything is read, checked and preprocessed here, before a caller writes anything, so a
bad folder or file stops a run with one ``DataError`` line naming it. The arrays live in
memory: N x 3 x H x W float32, e.g. 300 images at 224 px are 181 MB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.images import DEFAULT_CALIBRATION_IMAGES, calibration_images, labelled_folder
from partialnet.transform import model_meta, preprocess_batch

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ImageBatch:
    """Preprocessed images with where they came from; labels only for a labelled folder."""

    source: Path
    paths: tuple[Path, ...]
    inputs: np.ndarray  # N x 3 x H x W float32, the model's preprocessing applied
    labels: np.ndarray | None = None  # N int64 class indices
    classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for manifests: the folder, the count, labelled or not."""
        info: dict[str, Any] = {"dataset": str(self.source), "images": len(self)}
        if self.classes is not None:
            info["classes"] = len(self.classes)
        return info


def eval_data(directory: PathLike, model_or_meta: Any) -> ImageBatch:
    """A labelled (ImageFolder) folder, checked against the model's class count."""
    meta = model_meta(model_or_meta)
    folder = labelled_folder(directory, num_classes=meta.num_classes)
    return ImageBatch(
        folder.root,
        folder.paths,
        preprocess_batch(folder.paths, meta),
        np.asarray(folder.labels, dtype=np.int64),
        folder.classes,
    )


def calibration_data(
    directory: PathLike,
    model_or_meta: Any,
    count: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    *,
    exclude: Iterable[PathLike] = (),
) -> ImageBatch:
    """A seeded sample of ``count`` images of any folder (recursively), minus ``exclude``."""
    paths = calibration_images(directory, count, seed, exclude=exclude)
    return ImageBatch(Path(directory), tuple(paths), preprocess_batch(paths, model_or_meta))
