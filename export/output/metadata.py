"""What every artifact carries about itself: variant, input, preprocessing, precision,
splits, weights and toolchain. One encoding for every format's string key-value metadata
(ONNX metadata_props, an IR's rt_info): strings as they are, every other value as JSON."""

from __future__ import annotations

import json
from typing import Any

import torch

import partialnet
from partialnet.inference import InferencePartialNet


def artifact_metadata(
    variant: str,
    model: InferencePartialNet,
    *,
    precision: str,
    batch: int,
    dynamic_batch: tuple[int, int, int] | None,
    checkpoint: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata embedded in an exported model (values are plain data)."""
    meta = model.cfg.meta
    return {
        "variant": variant,
        "input_size": list(model.input_size),
        "input_layout": "NCHW float32, RGB scaled to [0,1] then (x - mean) / std",
        "mean": list(meta.mean),
        "std": list(meta.std),
        "crop_pct": meta.crop_pct,
        "classes": model.cfg.num_classes,
        "precision": precision,
        "batch": batch,
        "dynamic_batch": list(dynamic_batch) if dynamic_batch else None,
        "split_indices": model.split_indices,
        "checkpoint_sha256": (checkpoint or {}).get("sha256", "random-weights"),
        "toolchain": f"partialnet-export {partialnet.__version__}",
        "torch": torch.__version__,
        **(extra or {}),
    }


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Strings stay as they are; numbers, lists, dicts and None become JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
