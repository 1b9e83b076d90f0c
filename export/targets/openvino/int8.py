"""NNCFFromOpenVINO: an fp32 OpenVINO model -> an int8 IR quantized by NNCF, calibrated on
the batches given.

``nncf.quantize`` (post-training, on the OpenVINO model) inserts FakeQuantize nodes;
OpenVINO's CPU plugin runs the quantized convolutions with VNNI/AMX int8 kernels.

Choices (measured on t1 224 px and the trained digits t0 64 px, AVX-512 VNNI CPU):

* preset PERFORMANCE (symmetric activations and weights, NNCF's default for CPU): MIXED
  (asymmetric activations) gives the CPU nothing faster, and the Q/DQ the user may compare
  with is symmetric too.
* model_type left unset (a CNN): ``ModelType.TRANSFORMER`` switches on SmoothQuant and keeps
  more of the graph in float, meant for models made mostly of attention; ours has attention
  only in the last stage, over 7x7 tokens.
* The fp32 islands of the inference form are an ignored scope: the channel gate's conv on
  the (mean, std) statistics and the attention's activation x activation matmuls.
* Only Convolution/MatMul inputs are quantized (``FLOAT_OP_TYPES`` ignored), as in the Q/DQ
  ONNX. NNCF's CPU default also quantizes the inputs of Add, Multiply, Concat, ...; on the
  trained digits t0 that cost 0.6 top-1 points (99.2% -> 98.6%) and a worst per-image
  cosine of 0.80 (MIXED preset: 0.79; without our islands: 0.80), failing the int8 gate.
  Convolution/MatMul only: 99.2%, worst cosine 0.988, and NNCF runs 3x faster. OpenVINO's
  int8 latency did not get worse (t1 224 px, one thread, best of 3x60 on a loaded machine:
  8.0 ms vs 10.1 ms with NNCF's default, fp32 15.3 ms).
* ``fast_bias_correction``: see ``FAST_BIAS_CORRECTION``.
* NNCF's overflow fix on every layer (7-bit weights): see ``OVERFLOW_FIX``.
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
from partialnet.export.output.metadata import encode_metadata
from partialnet.quiet import muted
from partialnet.runtimes.base import import_sdk

# Everything but Convolution/MatMul stays float (see the module docstring); a type absent
# from a graph is simply not matched (the scope is not validated).
FLOAT_OP_TYPES = (
    "Add",
    "Multiply",
    "Subtract",
    "Divide",
    "Concat",
    "ReduceMean",
    "Sqrt",
    "Power",
    "HSigmoid",
    "HSwish",
    "Gelu",
    "Softmax",
)

FAST_BIAS_CORRECTION = False
"""NNCF's default is the fast variant; the full bias correction re-runs each quantized layer
to correct its output mean. On the trained digits t0 (Convolution/MatMul scope, 128
calibration images, 359 held-out) both kept fp32's 99.16% top-1; worst per-image cosine
0.9887 (full) vs 0.9882 (fast), mean relative logit error 0.0360 vs 0.0359: a tie. NNCF's own
table shows small efficient nets collapsing with the fast one (mobilenetv3_small_050: 57.9 ->
41.8 top-1, 56.6 with the full one), and ours are small efficient nets, so the full one is
the default. Its price is export time: t1 224 px, 32 images, 8-10 s vs 4.5-5 s (2 cores,
load average ~2)."""


OVERFLOW_FIX = "enable"
"""NNCF's ``OverflowFix``: ``enable`` (every layer), ``first_layer_only`` (NNCF's default for
OpenVINO) or ``disable``. Without VNNI, OpenVINO's int8 convolutions (oneDNN ``jit_avx2_I8``)
add pairs of u8 x s8 products in int16 (``vpmaddubsw``), which saturates with full 8-bit
weights; the fix halves the weight range (and doubles the scale) where NNCF applies it. On the
trained digits t0 (128 calibration images, 1285 held-out; fp32 and int8 IR both on AVX2
kernels, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``partialnet.bench.goals.openvino.isa``): first layer
only, min per-image cosine 0.955, failing the int8 rule (natively on AVX-512 VNNI: 0.996);
every layer, 0.99624 on both ISAs, identical outputs, top-1 unchanged (98.99%). The same
saturation as ONNX Runtime's U8S8 Q/DQ without VNNI, fixed the same way (7-bit weights)."""


def _import_sdks() -> tuple[Any, Any]:
    ov = import_sdk("openvino", "openvino", "INT8 OpenVINO quantization")
    return ov, import_sdk("nncf", "int8", "INT8 OpenVINO quantization")


def fp32_islands(model: Any) -> list[str]:
    """Friendly names of the OpenVINO ops NNCF must leave in float (see the module docstring):
    a Convolution fed by the Concat of ReduceMean/Sqrt statistics, and a MatMul with no
    constant operand."""
    names = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        producers = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if kind == "Convolution" and producers[0].get_type_name() == "Concat":
            fed_by = {
                producers[0].input_value(i).get_node().get_type_name()
                for i in range(producers[0].get_input_size())
            }
            if fed_by & {"ReduceMean", "Sqrt"}:
                names.append(op.get_friendly_name())
        elif kind == "MatMul" and not any(p.get_type_name() == "Constant" for p in producers):
            names.append(op.get_friendly_name())
    return names


def read_fp32_model(path: Path) -> Any:
    """The fp32 OpenVINO model from an IR (its directory or .xml) or an ONNX file."""
    from partialnet.export.targets.openvino.convert import ir_xml

    ov, _ = _import_sdks()
    path = ir_xml(Path(path)) if Path(path).is_dir() else Path(path)
    return ov.Core().read_model(str(path))


def quantize_openvino(
    fp32_path: Path,
    xml_path: Path,
    calibration: Iterable[np.ndarray],
    *,
    fast_bias_correction: bool = FAST_BIAS_CORRECTION,
    overflow_fix: str = OVERFLOW_FIX,
    metadata: dict[str, Any] | None = None,
) -> dict[str, object]:
    """Quantize the fp32 IR or ONNX at ``fp32_path`` with NNCF and save the int8 IR at
    ``xml_path`` (.bin beside it); return facts for the manifest.

    ``calibration`` yields preprocessed float32 NCHW batches (cut to the model's batch).
    """
    ov, nncf = _import_sdks()
    model = read_fp32_model(fp32_path)
    dim0 = model.inputs[0].get_partial_shape()[0]
    fixed = dim0.get_length() if dim0.is_static else None
    batches = require_batches(list(rebatch(calibration, fixed)), fixed)
    excluded = fp32_islands(model)
    started = time.perf_counter()
    try:
        with muted(["nncf"], stdout=True):  # NNCF logs each ignored node, draws bars
            quantized = nncf.quantize(
                model,
                nncf.Dataset(batches),
                **nncf_settings(nncf, len(batches), excluded, fast_bias_correction),
                advanced_parameters=advanced_parameters(nncf, overflow_fix),
            )
    except Exception as exc:  # NNCF raises many unrelated types
        raise ExportFailure(
            f"NNCF could not quantize {Path(fp32_path).name}: {type(exc).__name__}: "
            f"{first_line(exc, None, '')}"
        ) from exc
    seconds = time.perf_counter() - started
    save_quantized_ir(quantized, xml_path, metadata)
    fake_quantize = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    return {
        "quantizer": f"nncf.quantize {nncf.__version__}",
        "preset": "performance (symmetric int8)",
        "quantized_op_types": ["Convolution", "MatMul"],
        "fast_bias_correction": fast_bias_correction,
        "overflow_fix": overflow_fix,
        "fp32_nodes": excluded,
        "calibration_images": int(sum(b.shape[0] for b in batches)),
        "fake_quantize_nodes": fake_quantize,
        "quantize_seconds": round(seconds, 2),
        "openvino": ov.__version__,
    }


def save_quantized_ir(quantized: Any, xml_path: Path, metadata: dict[str, Any] | None) -> None:
    """Write a quantized model with our metadata (in the export's scratch directory, placed
    as a whole IR directory). int8 weights are already compact; fp16 compression would only
    touch the float islands, so it is off."""
    ov = import_sdk("openvino", "openvino", "INT8 OpenVINO quantization")
    for key, value in encode_metadata(metadata or {}).items():
        quantized.set_rt_info(value, ["partialnet", key])
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)


def nncf_settings(
    nncf: Any, batches: int, excluded: list[str], fast_bias_correction: bool
) -> dict[str, Any]:
    """The quantizer settings both NNCF paths share (plain and accuracy-controlled):
    symmetric int8, every calibration batch, the float islands and op types left alone."""
    return {
        "preset": nncf.QuantizationPreset.PERFORMANCE,
        "subset_size": batches,
        "fast_bias_correction": fast_bias_correction,
        "ignored_scope": nncf.IgnoredScope(
            names=excluded, types=list(FLOAT_OP_TYPES), validate=False
        ),
    }


def advanced_parameters(nncf: Any, overflow_fix: str = OVERFLOW_FIX) -> Any:
    """NNCF's advanced quantization parameters both paths pass (``advanced_parameters`` to
    ``nncf.quantize``, ``advanced_quantization_parameters`` to the accuracy-controlled one):
    the overflow fix (``OVERFLOW_FIX``)."""
    params = nncf.quantization.advanced_parameters
    return params.AdvancedQuantizationParameters(overflow_fix=params.OverflowFix(overflow_fix))
