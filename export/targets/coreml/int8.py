"""CoreML int8: 8-bit weights (W8) on any OS, 8-bit activations too (W8A8) where possible.

Both use coremltools' own compressors (``coremltools.optimize.coreml``):

* W8: ``linear_quantize_weights``, int8 symmetric, per output channel. Per-channel int8
  weights are stored as ``constexpr_affine_dequantize`` ops, which every ML-program target
  from iOS16/macOS13 on runs; the weights shrink 4x and the Neural Engine dequantizes them on
  load. It needs no data and runs on Linux.
* W8A8: ``linear_quantize_activations`` (calibrated on the batches given) then W8.
  coremltools calibrates by running the model (``MLModel.predict``), which exists only on
  macOS; and quantize/dequantize activation ops need an iOS17/macOS14 target or later.
  ``w8a8_unavailable_reason`` says which of the two stops it here.

W8 needs no accuracy fallback (``partialnet.export.int8_fallback`` does not apply to it): int8
breaks on activation outliers, which W8 leaves in float. Measured on the int8-hostile digits
t0 (``partialnet.bench.data.outliers``; plain int8 falls to 9.75% top-1 on both CPU
runtimes' int8): W8 top-1 99.44% = eager fp32, min per-image cosine 0.9972 (0.99994 unmodified),
simulated on Linux. W8A8 quantizes activations and would need one; not measured (macOS only).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.gate.calibration import rebatch, require_batches
from partialnet.export.output.files import atomic_dir
from partialnet.quiet import muted
from partialnet.runtimes.base import import_sdk

# ML-program spec version of the iOS17 / macOS14 family: the first with activation
# quantize/dequantize ops (coremltools' AvailableTarget numbering).
_ACTIVATION_QUANT_SPEC = 8


def _import_coremltools() -> Any:
    purpose = "CoreML int8 quantization"
    ct = import_sdk("coremltools", "coreml", purpose)
    return ct, import_sdk("coremltools.optimize.coreml", "coreml", purpose)


def _load(model: Any) -> Any:
    ct, _ = _import_coremltools()
    if isinstance(model, (str, Path)):
        # Reading the spec and weights works on any OS; compiling for prediction does not.
        return ct.models.MLModel(str(model), skip_model_load=platform.system() != "Darwin")
    return model


def w8a8_unavailable_reason(model: Any) -> str | None:
    """Why 8-bit activations cannot be produced here for ``model`` (a path or an MLModel),
    or None when they can."""
    spec_version = _load(model).get_spec().specificationVersion
    if spec_version < _ACTIVATION_QUANT_SPEC:
        return (
            "8-bit activations need an iOS17/macOS14 deployment target or later "
            f"(this model's spec version is {spec_version}): re-export with a newer "
            "--coreml-min-target"
        )
    if platform.system() != "Darwin":
        return (
            "coremltools calibrates activations by running the model, which only macOS can "
            "do: export W8A8 on a Mac"
        )
    return None


def quantize_coreml(
    model: Any,
    out_path: Path,
    *,
    activations: bool = False,
    calibration: Iterable[np.ndarray] | None = None,
    input_name: str | None = None,
) -> dict[str, object]:
    """Write an int8 copy of ``model`` (an .mlpackage path or a converted MLModel) to
    ``out_path``: W8, or W8A8 with ``activations=True`` (needs ``calibration`` batches and
    ``w8a8_unavailable_reason(model)`` to be None). Returns facts for the manifest."""
    ct, cto = _import_coremltools()
    mlmodel = _load(model)
    started = time.perf_counter()
    calibration_images = 0
    if activations:
        reason = w8a8_unavailable_reason(mlmodel)
        if reason is not None:
            raise UsageError(f"CoreML W8A8 is not possible here: {reason}")
        if calibration is None:
            raise UsageError("CoreML W8A8 needs calibration images: give --calibration-data")
        name = input_name or mlmodel.get_spec().description.input[0].name
        shape = tuple(mlmodel.get_spec().description.input[0].type.multiArrayType.shape)
        batches = require_batches(list(rebatch(calibration, shape[0] if shape else 1)), 1)
        calibration_images = sum(b.shape[0] for b in batches)
        activation_config = cto.OptimizationConfig(
            global_config=cto.experimental.OpActivationLinearQuantizerConfig(
                mode="linear_symmetric"
            )
        )
        try:
            with muted(["coremltools"], progress_bars=True):  # a tqdm bar per pass
                mlmodel = cto.experimental.linear_quantize_activations(
                    mlmodel, activation_config, [{name: b} for b in batches]
                )
        except Exception as exc:  # coremltools raises many unrelated types
            raise ExportFailure(f"coremltools could not quantize activations: {exc}") from exc
    weight_config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"
        )
    )
    try:
        with muted(["coremltools"], progress_bars=True):
            quantized = cto.linear_quantize_weights(mlmodel, weight_config)
    except Exception as exc:
        raise ExportFailure(f"coremltools could not quantize the weights: {exc}") from exc
    seconds = time.perf_counter() - started
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_path) as staged:
        quantized.save(str(staged))
    return {
        "quantizer": f"coremltools.optimize.coreml {ct.__version__}",
        "scheme": "W8A8" if activations else "W8",
        "weights": "int8 symmetric per-channel (constexpr_affine_dequantize)",
        "activations": "int8 symmetric, calibrated" if activations else "float (as converted)",
        "calibration_images": calibration_images,
        "quantize_seconds": round(seconds, 2),
        "int8_weight_ops": _count_ops(quantized, "constexpr_affine_dequantize"),
    }


def _count_ops(mlmodel: Any, op_type: str) -> int:
    spec = mlmodel.get_spec()
    count = 0
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            count += sum(1 for op in block.operations if op.type == op_type)
    return count
