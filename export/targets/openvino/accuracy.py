"""NNCF's accuracy-aware int8 for the OpenVINO IR: ``nncf.quantize_with_accuracy_control``.

It quantizes as ``quantize_openvino`` does (same preset, scope, bias correction, overflow
fix), validates on the gate's images, and while the drop exceeds the budget ranks the
quantizer groups (by reverting each and measuring the outputs on the worst images) and
returns the worst to float. Used by the int8 fallback when plain NNCF fails the gate
(``partialnet.export.int8_fallback``).

The metric NNCF maximizes is the gate's own rule: with labels, top-1 accuracy (budget:
``max_drop``); without, ``min(agreement / 0.97, worst image cosine / 0.98, 1)`` against the
eager model's logits, which is 1 exactly when the label-free int8 rule holds, with a budget
of 0. The gate judges the result again afterwards; NNCF's verdict is not trusted alone.

Why NNCF's and not the ONNX Q/DQ search (``partialnet.export.int8_fallback``): NNCF places
its quantizers differently from ONNX Runtime (ONNX Runtime rounds the stem conv's output
ahead of a Split; NNCF does not), so a ranking measured on the Q/DQ ONNX names the wrong
layers for the IR, and NNCF ranks its own quantizer groups on the IR itself. Measured on the
outlier digits model (``partialnet.bench.data.outliers``, 300 calibration images, 359 val
digits, 2 cores under load ~10): plain NNCF 9.75% top-1, accuracy control 99.44% (eager
fp32 99.44%) with 1 of 49 layers in float, in 119 s. Its ranking re-evaluates the model once
per quantizer group, so it is the slow part of an int8 export that needs it; a ranking
subset of 64 images instead of NNCF's 300 was not faster here (153 s, same result).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import first_line
from partialnet.export.errors import ExportFailure
from partialnet.export.gate.calibration import rebatch, require_batches
from partialnet.export.gate.parity import INT8_MIN_IMAGE_COSINE, INT8_MIN_TOP1
from partialnet.export.targets.openvino.int8 import (
    FAST_BIAS_CORRECTION,
    OVERFLOW_FIX,
    _import_sdks,
    advanced_parameters,
    fp32_islands,
    nncf_settings,
    read_fp32_model,
    save_quantized_ir,
)
from partialnet.quiet import muted


def _label_free_metric(logits: np.ndarray, reference: np.ndarray) -> tuple[float, list[float]]:
    ref, out = reference.reshape(len(reference), -1), logits.reshape(len(logits), -1)
    agree = (ref.argmax(1) == out.argmax(1)).astype(float)
    cos = (ref * out).sum(1) / np.maximum(
        np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30
    )
    metric = min(agree.mean() / INT8_MIN_TOP1, cos.min() / INT8_MIN_IMAGE_COSINE, 1.0)
    return float(metric), [
        float(min(a, c / INT8_MIN_IMAGE_COSINE, 1.0)) for a, c in zip(agree, cos, strict=True)
    ]


def quantize_openvino_accuracy_control(
    fp32_path: Path,
    xml_path: Path,
    calibration: Iterable[np.ndarray],
    images: np.ndarray,
    *,
    labels: np.ndarray | None,
    reference: np.ndarray,
    max_drop: float,
    max_float_layers: int,
    metadata: dict[str, Any] | None = None,
) -> dict[str, object]:
    """Quantize with NNCF's accuracy control, validating on ``images`` (the gate's); write
    the IR at ``xml_path``. ``reference``: the eager model's logits on ``images``.
    ``max_drop``: top-1 budget as a fraction (used with labels); ``max_float_layers``: the
    most layers NNCF may return to float."""
    ov, nncf = _import_sdks()
    model = read_fp32_model(fp32_path)
    dim0 = model.inputs[0].get_partial_shape()[0]
    fixed = dim0.get_length() if dim0.is_static else None
    batches = require_batches(
        list(rebatch([calibration] if isinstance(calibration, np.ndarray) else calibration, fixed)),
        fixed,
    )
    step = fixed or 1
    count = len(images) - len(images) % step
    items = [(np.ascontiguousarray(images[i : i + step]), i) for i in range(0, count, step)]

    def validate(compiled: Any, data: Iterable[Any]) -> tuple[float, list[float]]:
        outs, index = [], []
        for x, i in data:
            outs.append(np.asarray(compiled(x)[0]))
            index.extend(range(i, i + step))
        logits = np.concatenate(outs)
        if labels is not None:
            hits = (logits.argmax(1) == labels[index]).astype(float)
            return float(hits.mean()), [float(h) for h in hits]
        return _label_free_metric(logits, reference[index])

    excluded = fp32_islands(model)
    started = time.perf_counter()
    try:
        with muted(["nncf"], stdout=True):  # NNCF logs each ignored node, draws bars
            quantized = nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(batches),
                nncf.Dataset(items, lambda item: item[0]),
                validate,
                max_drop=max_drop if labels is not None else 0.0,
                drop_type=nncf.DropType.ABSOLUTE,
                **nncf_settings(nncf, len(batches), excluded, FAST_BIAS_CORRECTION),
                advanced_quantization_parameters=advanced_parameters(nncf),
                advanced_accuracy_restorer_parameters=(
                    nncf.quantization.advanced_parameters.AdvancedAccuracyRestorerParameters(
                        max_num_iterations=max_float_layers
                    )
                ),
            )
    except Exception as exc:  # NNCF raises many unrelated types
        raise ExportFailure(
            f"NNCF accuracy control could not quantize {Path(fp32_path).name}: "
            f"{type(exc).__name__}: {first_line(exc, None, '')}"
        ) from exc
    seconds = time.perf_counter() - started
    save_quantized_ir(quantized, xml_path, metadata)
    return {
        "quantizer": f"nncf.quantize_with_accuracy_control {nncf.__version__}",
        "preset": "performance (symmetric int8)",
        "quantized_op_types": ["Convolution", "MatMul"],
        "fast_bias_correction": FAST_BIAS_CORRECTION,
        "overflow_fix": OVERFLOW_FIX,
        "fp32_nodes": excluded,
        "float_layers": float_layers(model, quantized),
        "calibration_images": int(sum(b.shape[0] for b in batches)),
        "fake_quantize_nodes": _count(quantized, "FakeQuantize"),
        "quantize_seconds": round(seconds, 2),
        "openvino": ov.__version__,
    }


def _count(model: Any, kind: str) -> int:
    return sum(1 for op in model.get_ops() if op.get_type_name() == kind)


def quantizable_ops(model: Any) -> list[str]:
    """Friendly names of the Convolution/MatMul ops outside the fp32 islands."""
    islands = set(fp32_islands(model))
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
        and op.get_friendly_name() not in islands
    ]


def float_layers(fp32: Any, quantized: Any) -> list[str]:
    """The quantizable ops of ``fp32`` whose weights are not fed by a FakeQuantize in
    ``quantized`` (NNCF returned them to float)."""
    fed = set()
    for op in quantized.get_ordered_ops():
        # A quantized weight reaches the op through FakeQuantize (or the Convert/Multiply
        # of its int8 storage); a weight returned to float is a plain Constant.
        weighted = op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
        if weighted and op.input_value(1).get_node().get_type_name() != "Constant":
            fed.add(op.get_friendly_name())
    return [name for name in quantizable_ops(fp32) if name not in fed]
