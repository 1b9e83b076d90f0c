"""Calibration batches as the quantizers take them: float32 NCHW, cut to the model's batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from partialnet.errors import UsageError


def rebatch(batches: Iterable[np.ndarray], batch: int | None) -> Iterator[np.ndarray]:
    """Cut preprocessed float32 NCHW batches into the model's fixed ``batch`` (``None``: a
    dynamic batch axis, yielded as given).

    A tail shorter than a fixed batch is dropped: the graph cannot take it.
    """
    pending: list[np.ndarray] = []
    held = 0
    for array in batches:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise UsageError(
                f"calibration batches must be NCHW float32 arrays, got shape {array.shape}: "
                "stack preprocessed images with a leading batch axis"
            )
        if batch is None:
            yield array
            continue
        pending.append(array)
        held += array.shape[0]
        while held >= batch:
            joined = np.concatenate(pending)
            yield joined[:batch]
            pending, held = [joined[batch:]], held - batch


def require_batches(batches: list[np.ndarray], batch: int | None) -> list[np.ndarray]:
    """``batches``, or a usage error when no calibration image reached the quantizer."""
    if not batches:
        raise UsageError(
            f"no calibration images reached the quantizer: give at least {batch or 1} "
            "preprocessed image(s) (--calibration-data with images in it)"
        )
    return batches
