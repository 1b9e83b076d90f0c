"""ONNXFromInference: the inference-form torch model -> a checked, simplified ONNX with
metadata, written atomically."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from pathlib import Path

import torch

from partialnet.errors import first_line
from partialnet.export.errors import ExportFailure
from partialnet.export.output.files import atomic_file
from partialnet.export.output.metadata import encode_metadata
from partialnet.inference import InferencePartialNet
from partialnet.outputs import output_names
from partialnet.quiet import muted
from partialnet.runtimes.base import import_sdk

# Ops that betray a graph that was not lowered properly: dynamic indexing (NonZero,
# scatters), control flow, or unfolded training-time layers.
FORBIDDEN_OPS = frozenset(
    {"NonZero", "ScatterND", "ScatterElements", "Loop", "If", "BatchNormalization", "Dropout"}
)

log = logging.getLogger(__name__)
INPUT_NAME = "input"


def _import_onnx():
    return import_sdk("onnx", "onnx", "ONNX export")


def quiet_onnx_exporter() -> contextlib.AbstractContextManager[None]:
    """Mute torch.onnx's progress prints, registry warnings and deprecation chatter."""
    return muted(["torch.onnx"], stdout=True, python_warnings=True)


def _gelu(self, approximate: str = "none"):
    """aten.gelu as ``(x * (1 + erf(x / sqrt(2)))) * 0.5``, the exact GELU in the one
    arrangement every consumer we target handles.

    torch.onnx's own lowering, ``x * (0.5 * (1 + erf(x / sqrt(2))))``, crashes OpenCV's DNN
    importer (5.0, a segfault in readNetFromONNX); this order is the one the TorchScript
    exporter wrote, which OpenCV loads. With the 0.5 last, the graph optimizer folds it into
    the next 1x1 conv's weights (exact: a power of two), so a GELU feeding a conv costs one
    op fewer than before. At opset >= 20 the exporter emits the Gelu op instead.
    """
    from onnxscript import opset18 as op

    if approximate != "none":  # the inference form only builds exact GELUs (nn.GELU())
        raise NotImplementedError(f"GELU approximate={approximate!r} has no ONNX lowering here")
    sqrt2 = op.CastLike(op.Constant(value_float=math.sqrt(2.0)), self)
    one = op.CastLike(op.Constant(value_float=1.0), self)
    half = op.CastLike(op.Constant(value_float=0.5), self)
    return op.Mul(op.Mul(self, op.Add(op.Erf(op.Div(self, sqrt2)), one)), half)


def trace_to_onnx(
    model: InferencePartialNet, batch: int, dynamic_batch: tuple[int, int, int] | None, opset: int
):
    """torch.onnx (dynamo exporter) -> an onnx.ModelProto, with the exporter's chatter muted."""
    _import_onnx()
    h, w = model.input_size
    # torch.export specializes dimensions of size 0 and 1, so a dynamic batch traces with >= 2.
    sample_batch = max(2, dynamic_batch[1]) if dynamic_batch else batch
    sample = torch.zeros(sample_batch, model.cfg.in_chans, h, w)
    dynamic_shapes = None
    if dynamic_batch:
        dim = torch.export.Dim("batch", min=dynamic_batch[0], max=max(dynamic_batch[2], 2))
        dynamic_shapes = ({0: dim},)
    with quiet_onnx_exporter():
        program = torch.onnx.export(
            model.eval(),
            (sample,),
            input_names=[INPUT_NAME],
            output_names=output_names(model),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
            optimize=True,  # also turns SplitToSequence into Split (not every parser takes it)
            custom_translation_table={torch.ops.aten.gelu.default: _gelu},
        )
    return program.model_proto


def check_and_simplify(proto):
    """onnx checker + strict shape inference, then onnxsim (a failure there is a warning)."""
    onnx = _import_onnx()
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises several unrelated types
        raise ExportFailure(f"the exported ONNX fails the onnx checker: {exc}") from exc
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        if ok:
            proto = simplified
        else:
            log.warning(
                "onnxsim could not validate its simplified graph; kept the unsimplified ONNX"
            )
    except ImportError:
        log.warning(
            "onnxsim is not installed; the ONNX is not simplified "
            "(pip install 'partialnet-export[onnx]')"
        )
    except Exception as exc:  # onnxsim failures must not lose the export
        log.warning("onnxsim failed (%s: %s); kept the unsimplified ONNX", type(exc).__name__, exc)
    return proto


def op_histogram(proto) -> Counter:
    return Counter(node.op_type for node in proto.graph.node)


def assert_lowered(proto) -> None:
    bad = sorted(set(op_histogram(proto)) & FORBIDDEN_OPS)
    if bad:
        raise ExportFailure(
            f"the ONNX still contains {', '.join(bad)}: the inference form "
            "was not fully lowered (please report this as a bug)"
        )


def set_metadata(proto, metadata: dict[str, object]) -> None:
    del proto.metadata_props[:]
    for key, value in encode_metadata(metadata).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value


def read_metadata(path: Path) -> dict[str, str]:
    onnx = _import_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def export_onnx(
    model: InferencePartialNet,
    path: Path,
    *,
    batch: int,
    dynamic_batch: tuple[int, int, int] | None,
    opset: int,
    metadata: dict[str, object],
) -> dict[str, object]:
    """Write ``model`` as ONNX at ``path``; returns facts (node count, ops) for the manifest."""
    onnx = _import_onnx()
    try:
        proto = trace_to_onnx(model, batch, dynamic_batch, opset)
    except Exception as exc:
        raise ExportFailure(
            f"torch.onnx could not export the inference form: "
            f"{type(exc).__name__}: {first_line(exc, None, '')}"
        ) from exc
    proto = check_and_simplify(proto)
    assert_lowered(proto)
    set_metadata(proto, metadata)
    with atomic_file(path) as tmp:
        onnx.save(proto, str(tmp))
    ops = op_histogram(proto)
    return {"opset": opset, "nodes": sum(ops.values()), "ops": dict(sorted(ops.items()))}
