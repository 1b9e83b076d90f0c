"""QDQFromONNX: an fp32 ONNX -> a Q/DQ int8 ONNX, calibrated on the batches given.

ONNX Runtime's own post-training quantizer (``onnxruntime.quantization.quantize_static``) does
the work; nothing here computes a scale. One graph cannot serve every consumer, so there is a
flavour per ``QdqRecipe`` a target declares (``TargetSpec.qdq``): ONNX Runtime's own here, the
others with their consumer's reasons in its package. Figures: t1, 224 px, batch 1, one
thread, best p50 of 3 alternated rounds, AVX-512 VNNI CPU, ONNX Runtime 1.32, a shared
machine (load ~2): fp32 14.6 ms.

* ``QdqFlavour.ONNXRUNTIME`` (8.9 ms, 0.61x fp32): uint8 asymmetric activations, int8
  symmetric per-channel weights in a 7-bit range (``reduce_range``), int32 biases. ONNX
  Runtime fuses each Conv group into QLinearConv (profiled: conv time 14.0 -> 6.4 ms). S8S8,
  the quantizer's default, ran 12.2 ms: ONNX Runtime's x86 int8 kernels are U8S8, and int8
  activations are converted first. A consumer of symmetric scales only refuses this flavour
  (non-zero zero points).
  Why 7-bit weights: without VNNI (AVX2, AVX-512F) the U8S8 kernels multiply with
  ``vpmaddubsw``, which adds two u8 x s8 products into an int16 and saturates above 32767
  (255 x 127 x 2 = 64770); weights in [-64, 64] keep every pair below it (255 x 64 x 2 =
  32640). The artifact must hold on every CPU it is deployed to, not only the one that
  exported it, so the ONNX Runtime flavour always uses it: it costs no speed (the same
  kernels run) and a hair of accuracy. Measured on the trained digits t0 (calibration on 128
  digits; min per-image cosine vs the fp32 ONNX and top-1 agreement on held-out digits), on
  AVX-512 VNNI natively and on AVX2 as ONNX Runtime computes inside ``qemu-x86_64 -cpu
  Haswell-noTSX`` (``python -m partialnet.bench.goals.int8 --skip-speed --emulate-cpu
  Haswell-noTSX``; ``partialnet.bench.goals.onnxruntime.emulated``):

  ============================  ====================  =====================
  weights (uint8 activations)   AVX-512 VNNI, 1,285   AVX2 (emulated), 300
  ============================  ====================  =====================
  8-bit                         0.99890, 99.8%        0.911, 99.3%: FAILS
  7-bit (this flavour)          0.99907, 99.9%        0.99926, 100%
  ============================  ====================  =====================

  A real AVX2 EPYC gave the 8-bit artifact 0.52 and 99.26% on 540 held-out digits.
* A symmetric flavour (int8 activations and weights, float biases) runs in ONNX Runtime too,
  without its fastest fusions (its recipe's module has the figures).

Only Conv/MatMul/Gemm inputs are quantized. Adding Concat and Split (int8 tensors through the
partial-channel split and concat) ran 8% faster (8.2 ms) but a Concat forces one scale on the
conv output and the gated half: on the trained digits t0 top-1 fell 99.16% -> 98.89% and the
worst per-image cosine 0.9997 -> 0.9938, so it is not done.

All keep the fp32 islands of the inference form (see ``partialnet.inference``): the channel
gate's 1x1 conv on the (mean, std) statistics and the attention's activation x activation
matmuls (with the softmax between them) are excluded; LayerNorm, softmax, GELU, Hardsigmoid
and the statistics are not in the quantized op types at all, so they stay float.

``quant_pre_process`` is not run: on our exported graphs (already checked and simplified by
onnxsim) it returns the same 354 nodes, so it would cost time and change nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError, first_line
from partialnet.export.errors import ExportFailure
from partialnet.export.gate.calibration import rebatch, require_batches
from partialnet.export.output.files import atomic_file
from partialnet.export.targets.base import QdqRecipe
from partialnet.quiet import muted
from partialnet.runtimes.base import import_sdk

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _recipes() -> dict[str, QdqRecipe]:
    from partialnet.export.targets import qdq_recipes

    return {recipe.flavour: recipe for recipe in qdq_recipes()}


# Which consumer a Q/DQ ONNX is shaped for: a member per registered recipe, named after its
# flavour (``QdqFlavour.ONNXRUNTIME`` is ONNX Runtime's own; see the module docstring).
QdqFlavour = enum.Enum(  # type: ignore[misc]
    "QdqFlavour", {name.upper(): name for name in _recipes()}, type=str, module=__name__
)


def _import_quantization() -> Any:
    return import_sdk("onnxruntime.quantization", "onnx", "INT8 ONNX quantization")


def _import_onnx() -> Any:
    return import_sdk("onnx", "onnx", "INT8 ONNX quantization")


def fp32_islands(proto: Any) -> list[str]:
    """Names of the Conv/MatMul nodes that must stay float.

    * The channel gate's conv: its input is ``Concat(mean, std)`` of a feature map, i.e. a
      Concat fed by a ReduceMean. Its statistics span a wide range per channel and feed a
      hardsigmoid whose output scales whole feature maps; int8 there costs the most accuracy.
    * MatMuls with no constant operand: attention's q·kᵀ and attn·v, around the softmax.
    """
    producers = {out: node for node in proto.graph.node for out in node.output}
    constants = {init.name for init in proto.graph.initializer}
    constants |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    names = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            src = producers.get(node.input[0])
            if src is not None and src.op_type == "Concat":
                fed_by = {producers[i].op_type for i in src.input if i in producers}
                if "ReduceMean" in fed_by:
                    names.append(node.name)
        elif node.op_type == "MatMul" and not any(i in constants for i in node.input):
            names.append(node.name)
    return names


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol (get_next / rewind) over our batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name, self.batches, self.index = input_name, batches, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def _settings(q: Any, recipe: QdqRecipe, method: str, reduce_range: bool) -> dict[str, Any]:
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    common = {
        "quant_format": q.QuantFormat.QDQ,
        "per_channel": True,
        "weight_type": q.QuantType.QInt8,
        "op_types_to_quantize": list(QUANTIZED_OP_TYPES),
        "calibrate_method": methods[method],
        "reduce_range": reduce_range,
    }
    extra: dict[str, bool] = {}
    if recipe.symmetric:
        extra |= {"ActivationSymmetric": True, "WeightSymmetric": True}
    if not recipe.int32_biases:
        extra["QuantizeBias"] = False
    activations = q.QuantType.QInt8 if recipe.symmetric else q.QuantType.QUInt8
    return {**common, "activation_type": activations, "extra_options": extra}


def qdq_facts(path: Path) -> dict[str, int]:
    """Counts of Q/DQ nodes and of DequantizeLinear nodes reading an Int32 tensor (biases)."""
    onnx = _import_onnx()
    proto = onnx.load(str(path))
    int32 = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    ops = [n.op_type for n in proto.graph.node]
    return {
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
        "int32_dequantize_nodes": sum(
            1 for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32
        ),
    }


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    calibration: Iterable[np.ndarray],
    *,
    flavour: QdqFlavour = QdqFlavour.ONNXRUNTIME,
    calibration_method: str = "minmax",
    reduce_range: bool | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, object]:
    """Write a Q/DQ int8 copy of ``fp32_path`` to ``out_path``; return facts for the manifest.

    ``calibration`` yields preprocessed float32 NCHW batches (any batch size; they are cut to
    the model's fixed batch). MinMax calibration is the default: on the trained digits model
    Entropy and Percentile kept the same accuracy and take longer. ``reduce_range`` (7-bit
    weights) defaults to the flavour's recipe: on for ONNX Runtime's U8S8 graph (see the
    module docstring), off for symmetric graphs, whose consumers do not saturate.
    ``exclude``: more node names to keep in float besides the fp32 islands (the accuracy
    fallback's choice, ``partialnet.export.targets.onnx.fallback``).
    """
    flavour = QdqFlavour(flavour)
    recipe = _recipes()[flavour.value]
    if reduce_range is None:
        reduce_range = recipe.reduce_range
    if calibration_method not in CALIBRATION_METHODS:
        raise UsageError(
            f"calibration method {calibration_method!r} is not one of "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    q, onnx = _import_quantization(), _import_onnx()
    proto = onnx.load(str(fp32_path))
    graph_input = proto.graph.input[0]
    dim0 = graph_input.type.tensor_type.shape.dim[0]
    fixed = dim0.dim_value if dim0.HasField("dim_value") else None
    batches = require_batches(list(rebatch(calibration, fixed)), fixed)
    excluded = fp32_islands(proto)
    excluded += [name for name in exclude if name not in excluded]
    started = time.perf_counter()
    out_path = Path(out_path)
    # The quantizer logs advice per node on the root logger (bias not an initializer,
    # "consider pre-processing"): none of it is actionable for an export.
    with atomic_file(out_path) as tmp, muted([""]):
        try:
            q.quantize_static(
                str(fp32_path),
                str(tmp),
                _Reader(graph_input.name, batches),
                nodes_to_exclude=excluded,
                **_settings(q, recipe, calibration_method, reduce_range),
            )
        except Exception as exc:  # the quantizer raises many unrelated types
            raise ExportFailure(
                f"ONNX Runtime could not quantize {Path(fp32_path).name}: "
                f"{type(exc).__name__}: {first_line(exc, None, '')}"
            ) from exc
        _copy_metadata(onnx, proto, tmp)
    seconds = time.perf_counter() - started
    return {
        "flavour": flavour.value,
        "quantizer": f"onnxruntime.quantization.quantize_static {_ort_version()}",
        "format": "QDQ",
        "activations": "int8 symmetric" if recipe.symmetric else "uint8 asymmetric",
        "weights": "int8 symmetric per-channel" + (" (7-bit range)" if reduce_range else ""),
        "biases": "int32" if recipe.int32_biases else "float32",
        "quantized_op_types": list(QUANTIZED_OP_TYPES),
        "fp32_nodes": excluded,
        "calibration_method": calibration_method,
        "calibration_images": int(sum(b.shape[0] for b in batches)),
        "quantize_seconds": round(seconds, 2),
        **qdq_facts(out_path),
    }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _copy_metadata(onnx: Any, source: Any, path: Path) -> None:
    """The quantizer drops the model's metadata_props; put ours back, precision int8."""
    quantized = onnx.load(str(path))
    del quantized.metadata_props[:]
    for prop in source.metadata_props:
        entry = quantized.metadata_props.add()
        entry.key, entry.value = prop.key, prop.value
        if prop.key == "precision":
            entry.value = "int8"
    onnx.save(quantized, str(path))
