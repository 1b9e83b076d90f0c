"""LiteRTInt8FromLiteRT: ai-edge-quantizer's static int8 (int8 per-channel weights, int8
per-tensor activations, int32 biases) of chosen op kinds of the fp32 .tflite, calibrated on
the calibration images; every other op stays float, and so do the model's input and output.

The recipe (``DEFAULT_RECIPE``): every CONV_2D but the channel gate's statistics conv, and
the head's FULLY_CONNECTED layers; activation ranges from the calibration images' min/max.
Measured with ``python -m partialnet.bench.goals.litert`` (AVX-512 VNNI+BF16 EPYC, 2 threads,
batch 1, best p50 of alternated rounds) on a shared 2-core machine at load average 5-13, the
last run at 2-3 (fp32 6.67 ms): absolute times moved 2-5x between runs, so each run's
int8/fp32 ratio is given (run 1 used the moving-average statistics, which change ranges, not
ops; the digits figures of the last run are identical):

======================  ===========================  =====================================
recipe (ops quantized)  t1 224 px int8/fp32 latency   trained digits t0, 1,285 held-out
                        per run (XNNPACK partitions)  images: top-1 (fp32 98.99%), worst
                                                      per-image cosine to fp32
======================  ===========================  =====================================
conv: CONV_2D + FC      0.48, 0.47, 0.49, 0.38,      min/max 98.99%, 0.9967;
                        0.40 (1)                     moving average 99.22%, 0.936
conv-nogate (chosen)    0.50, 0.64, 0.35, 0.41 (1)    min/max 98.91%, 0.9992;
                                                      moving average 98.91%, 0.971
conv-only: CONV_2D      -                            min/max 98.91%, 0.9971
xnnpack: + ADD, MUL,    1.76, 0.56, 0.36 (3)         min/max 98.91%, 0.9973;
SUB, CONCATENATION,                                  moving average 99.30%, 0.869
SLICE, RESHAPE,
TRANSPOSE, MEAN
xnnpack + GELU          0.50, 0.44 (17)              moving average 99.30%, 0.869
all supported ops       1.78, 0.50, 0.50, 0.53 (36)  min/max 98.91%, 0.9973;
                        : GELU, SQRT, RSQRT,         moving average 99.30%, 0.868
                        SOFTMAX, BATCH_MATMUL leave
                        XNNPACK
======================  ===========================  =====================================

Quantizing more than the convs buys nothing consistent (xnnpack: 1.76 at load 13, 0.36 at
load 2; all: no better than the convs) and lowers the worst image's cosine (0.9973 vs
0.9992), so the convs it is.

- Calibration statistics: ``Quantizer.calibrate`` keeps a moving average of each tensor's
  min/max over the samples, which clips the images whose activations reach furthest: with
  it no recipe met the gate's unlabelled int8 rule (every image's cosine >= 0.98). The
  calibrator with ``min_max_update`` keeps the full range (as ONNX Runtime's MinMax does).
- The channel gate's conv on (mean, std) stays float, as on the other targets: it is tiny,
  and quantizing it took the worst image from 0.9992 to 0.9967.
- Converting int8 inside litert-torch (its PT2E quantizer) lost the quantization parameters
  at the partial-channel concats (cosine 0.944 on t1, the issue's probe), so quantization
  works on the converted .tflite instead.
- The gates' clamp is already ``relu6`` (``form``): the int8 graph stays in one partition.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.runtimes.base import import_sdk

log = logging.getLogger(__name__)

# A recipe: (regex on the op's output tensor name, op kind) pairs quantized statically; every
# other op stays float. Tensor names carry the module path (e.g. ``..._Relu6ChannelGate_gate``).
Recipe = tuple[tuple[str, str], ...]
_ANY = ".*"
_NOT_GATE = r"^(?!.*Gate_gate)"  # the channel gate's statistics conv (an fp32 island elsewhere)
_NOT_STEM = r"^(?!.*Conv2d_stem)"
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
RECIPES: dict[str, Recipe] = {
    "conv": ((_ANY, "CONV_2D"), (_ANY, "FULLY_CONNECTED")),
    "conv-only": ((_ANY, "CONV_2D"),),
    "conv-nogate": ((_NOT_GATE, "CONV_2D"), (_ANY, "FULLY_CONNECTED")),
    "conv-nostem": ((_NOT_STEM, "CONV_2D"), (_ANY, "FULLY_CONNECTED")),
    "xnnpack": tuple((_ANY, op) for op in _XNNPACK_INT8),
    "xnnpack-gelu": tuple((_ANY, op) for op in (*_XNNPACK_INT8, "GELU")),
    "all": ((_ANY, "ALL_SUPPORTED"),),
}
DEFAULT_RECIPE = "conv-nogate"
INT8_OPS: Recipe = RECIPES[DEFAULT_RECIPE]


def int8_recipe(recipe: Recipe = INT8_OPS) -> Any:
    aeq = import_sdk("ai_edge_quantizer", "litert", "LiteRT int8")
    manager = aeq.recipe_manager.RecipeManager()
    for regex, op in recipe:
        manager.add_static_config(
            regex=regex,
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
    ops: Recipe = INT8_OPS,
    statistics: str = "minmax",
    threads: int = 2,
) -> dict[str, Any]:
    """Static int8 of ``fp32`` (a batch-``B`` model) calibrated on ``calibration`` (N x C x H x W
    float32, cut into batches of ``B``), float I/O; returns the facts for the manifest."""
    aeq = import_sdk("ai_edge_quantizer", "litert", "LiteRT int8")
    lite = import_sdk("ai_edge_litert.interpreter", "litert", "LiteRT int8")
    batch = int(lite.Interpreter(model_path=str(fp32)).get_input_details()[0]["shape"][0])
    images = calibration.transpose(0, 2, 3, 1) if nhwc else calibration
    samples = [
        {"input": np.ascontiguousarray(images[i : i + batch])}
        for i in range(0, len(images) - batch + 1, batch)
    ]
    log.info("ai-edge-quantizer: int8 of %s on %d images", fp32.name, len(samples) * batch)
    recipe = int8_recipe(ops)
    quantizer = aeq.Quantizer(str(fp32), recipe)
    calibrator = import_sdk("ai_edge_quantizer.calibrator", "litert", "LiteRT int8")
    qsv = import_sdk("ai_edge_quantizer.utils.qsv_utils", "litert", "LiteRT int8")
    # Quantizer.calibrate() keeps a moving average of each tensor's min/max, which clips the
    # images whose activations reach furthest; the calibrator with min_max_update keeps the
    # true range, as ONNX Runtime's MinMax does (measured in the module docstring).
    update = qsv.min_max_update if statistics == "minmax" else qsv.moving_average_update
    manager = aeq.recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    # The quantizer draws progress bars and prints a size report: the CLI has its own.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        calib = calibrator.Calibrator(str(fp32), num_threads=threads, qsv_update_func=update)
        calib.calibrate({"serving_default": samples}, manager)
        result = calib.get_model_qsvs()
        quantized = quantizer.quantize(
            result, enable_progress_bar=False, enable_progress_report=False
        )
    quantized.export_model(str(dst), overwrite=True)
    return {
        "precision": "int8",
        "layout": "NHWC" if nhwc else "NCHW",
        "quantized_ops": [f"{op} ({regex})" if regex != _ANY else op for regex, op in ops],
        "calibration_images": len(samples) * batch,
        "calibration_statistics": statistics,
    }
