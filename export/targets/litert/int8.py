"""LiteRT int8 (placeholder recipe; measured alternatives go here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from partialnet.runtimes.base import import_sdk

# Op kinds quantized statically (int8 weights and activations); the rest stay float.
_XNNPACK_INT8 = (
    "CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "SUB",
    "CONCATENATION",
    "SLICE",
    "RESHAPE",
    "TRANSPOSE",
    "MEAN",
)
RECIPES: dict[str, tuple[str, ...]] = {
    "conv": ("CONV_2D", "FULLY_CONNECTED"),
    "xnnpack": _XNNPACK_INT8,
    "xnnpack-gelu": (*_XNNPACK_INT8, "GELU"),
    "all": ("ALL_SUPPORTED",),
}
INT8_OPS: tuple[str, ...] = RECIPES["xnnpack"]


def int8_recipe(ops: tuple[str, ...] = INT8_OPS) -> Any:
    aeq = import_sdk("ai_edge_quantizer", "litert", "LiteRT int8")
    manager = aeq.recipe_manager.RecipeManager()
    for op in ops:
        manager.add_static_config(
            regex=".*",
            operation_name=aeq.qtyping.TFLOperationName[op],
            activation_num_bits=8,
            weight_num_bits=8,
        )
    return manager.get_quantization_recipe()


def quantize_litert(
    fp32: Path,
    dst: Path,
    calibration: np.ndarray,
    *,
    nhwc: bool,
    ops: tuple[str, ...] = INT8_OPS,
    batch: int = 1,
) -> dict[str, Any]:
    """Static int8 of ``fp32`` calibrated on ``calibration`` (N x C x H x W), float I/O."""
    aeq = import_sdk("ai_edge_quantizer", "litert", "LiteRT int8")
    quantizer = aeq.Quantizer(str(fp32), int8_recipe(ops))
    images = calibration.transpose(0, 2, 3, 1) if nhwc else calibration
    samples = [
        {"input": np.ascontiguousarray(images[i : i + batch])}
        for i in range(0, len(images) - batch + 1, batch)
    ]
    result = quantizer.calibrate({"serving_default": samples})
    quantizer.quantize(result).export_model(str(dst), overwrite=True)
    return {
        "precision": "int8",
        "layout": "NHWC" if nhwc else "NCHW",
        "quantized_ops": list(ops),
        "calibration_images": len(samples) * batch,
    }
