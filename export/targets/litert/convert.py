"""LiteRT export: the inference form -> ``litert_torch.convert`` (torch.export, no TensorFlow)
-> ``<stem>.tflite``, fp32 or fp16 weights, with the export's facts in its metadata.

- Float NCHW input and float outputs by default, as every other artifact; ``nhwc=True`` takes
  (N, H, W, C) and returns channel-last feature maps, as Android bitmaps arrive. Outputs are
  named as in the ONNX: ``logits``, or a backbone's ``feat0..feat3``; the input ``input``.
- fp16: the fp32 model with its conv/matmul weights stored as float16 (ai-edge-quantizer's
  float casting); XNNPACK takes their DEQUANTIZE ops into its one partition and computes in
  fp32 on the rounded weights: half the file (an Android GPU delegate may compute in fp16).
- A fixed batch only (``check_litert_options``): litert-torch 0.10 cannot lower the
  attention's batched matmul with a symbolic batch (``aten.expand`` with a symbolic size,
  jax tracer error), and ``resize_tensor_input`` on a fixed-batch .tflite runs but keeps
  the reshapes at the exported batch (a batch of 3 gave 1 row of logits, measured).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from partialnet.errors import UsageError
from partialnet.export.errors import ExportFailure
from partialnet.export.targets.litert.form import litert_form
from partialnet.inference import InferencePartialNet
from partialnet.runtimes.base import import_sdk
from partialnet.runtimes.litert import METADATA_NAME

log = logging.getLogger(__name__)

INPUT_NAME = "input"


class _NamedIO(nn.Module):
    """Named outputs (the converter names signature outputs after a returned dict's keys),
    and channel-last I/O when asked."""

    def __init__(self, model: nn.Module, nhwc: bool) -> None:
        super().__init__()
        self.model = model
        self.nhwc = nhwc

    def forward(self, input: Tensor) -> dict[str, Tensor]:
        x = input.permute(0, 3, 1, 2) if self.nhwc else input
        out = self.model(x)
        if not isinstance(out, tuple):
            return {"logits": out}
        return {f"feat{i}": f.permute(0, 2, 3, 1) if self.nhwc else f for i, f in enumerate(out)}


def check_litert_options(dynamic_batch: tuple[int, int, int] | None) -> None:
    """Refuse what LiteRT cannot take before anything is written."""
    if dynamic_batch is not None:
        raise UsageError(
            "LiteRT takes a fixed batch (litert-torch cannot convert the attention with a "
            "symbolic batch): drop --dynamic-batch for --target litert, or export litert "
            "separately with --batch N"
        )


def convert_litert(model: nn.Module, example: Tensor, path: Path) -> None:
    """``litert_torch.convert(model, example)`` written to ``path``; a failure is one line
    naming the op and the block it came from."""
    litert_torch = import_sdk("litert_torch", "litert", "LiteRT export")
    litert_torch._config.config.show_progress = False  # our CLI draws its own progress
    try:
        litert_torch.convert(model, sample_kwargs={INPUT_NAME: example}).export(str(path))
    except Exception as exc:
        raise ExportFailure(describe_conversion_error(exc, model, example)) from exc


def export_litert(
    model: InferencePartialNet,
    path: Path,
    *,
    batch: int,
    precision: str,
    nhwc: bool,
    metadata: dict[str, Any],
    scratch: Path,
) -> dict[str, Any]:
    """Convert the fp32 inference form to ``path`` (fp32 or fp16 weights); returns facts."""
    c, (h, w) = model.cfg.in_chans, model.input_size
    gen = torch.Generator().manual_seed(0)
    shape = (batch, h, w, c) if nhwc else (batch, c, h, w)
    example = torch.randn(shape, generator=gen)
    wrapped = _NamedIO(litert_form(model), nhwc).eval()
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        log.info("litert-torch: converting the inference form, input %s", list(shape))
        convert_litert(wrapped, example, fp32)
        source = fp32
        if precision == "fp16":
            source = Path(tmp) / "fp16.tflite"
            cast_weights_fp16(fp32, source)
        facts = {"precision": precision, "layout": "NHWC" if nhwc else "NCHW"}
        write_metadata(source, path, litert_metadata(metadata, nhwc))
    return facts


def litert_metadata(metadata: dict[str, Any], nhwc: bool) -> dict[str, Any]:
    """The export's metadata with the .tflite's own layout (the runner reads it back)."""
    if not nhwc:
        return {**metadata, "litert_layout": "NCHW"}
    layout = str(metadata.get("input_layout", "")).replace("NCHW", "NHWC")
    return {**metadata, "litert_layout": "NHWC", "input_layout": layout}


def cast_weights_fp16(src: Path, dst: Path) -> None:
    """Conv/FC/matmul weights stored as float16 (float casting), compute left to the runtime."""
    aeq = import_sdk("ai_edge_quantizer", "litert", "LiteRT fp16 weights")
    recipe = aeq.recipe_manager.RecipeManager()
    recipe.add_weight_only_config(
        regex=".*",
        operation_name=aeq.qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=aeq.algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    quantizer = aeq.Quantizer(str(src), recipe.get_quantization_recipe())
    quantizer.quantize().export_model(str(dst), overwrite=True)


def write_metadata(src: Path, dst: Path, metadata: dict[str, Any]) -> None:
    """Copy ``src`` to ``dst`` with ``metadata`` (JSON) in the model's metadata table under
    ``partialnet`` (read back by ``partialnet.runtimes.litert.read_tflite_metadata``)."""
    fb = import_sdk("ai_edge_litert.tools.flatbuffer_utils", "litert", "LiteRT metadata")
    schema = import_sdk("ai_edge_litert.schema_py_generated", "litert", "LiteRT metadata")
    model = fb.read_model(str(src))
    data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), np.uint8)
    buffer = schema.BufferT()
    buffer.data = data
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
    model.metadata.append(entry)
    fb.write_model(model, str(dst))


_NODE = re.compile(r"While executing %(\w+)")
_TARGET = re.compile(r"target=torch\.ops\.(\w+\.\w+)")


def describe_conversion_error(exc: BaseException, model: nn.Module, example: Tensor) -> str:
    """'litert conversion failed at aten.expand in stages.3.0.mixer (SelfAttnMixer): ...'.

    The converter names the FX node it was lowering; the node's module comes from exporting
    the same model again (only on this failure path) and reading its ``nn_module_stack``.
    """
    text = str(exc)
    first = (text.strip().splitlines() or [""])[0][:200]
    op = _TARGET.search(text)
    node = _NODE.search(text)
    where = _block_of(model, example, node.group(1)) if node else None
    at = f" at {op.group(1)}" if op else ""
    block = f" in {where}" if where else ""
    return (
        f"litert conversion failed{at}{block}: {type(exc).__name__}: {first}; rerun with "
        "--debug for the traceback and report it if the input was valid"
    )


def _block_of(model: nn.Module, example: Tensor, node_name: str) -> str | None:
    try:
        program = torch.export.export(model, (), {INPUT_NAME: example})
    except Exception:  # the export itself failed: the converter's message is all there is
        return None
    for node in program.graph.nodes:
        if node.name == node_name:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                path = re.sub(r"^model\.", "", str(path).removeprefix("L['self'].")) or path
                return f"{path} ({getattr(cls, '__name__', str(cls).split('.')[-1])})"
    return None
