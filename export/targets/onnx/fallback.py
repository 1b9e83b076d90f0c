"""The int8 fallback for the Q/DQ ONNX graphs (``partialnet.export.int8_fallback`` runs the
search; this module ranks and re-quantizes).

Ranking for a Q/DQ ONNX (``OnnxRanker``): both the fp32 and the Q/DQ graph are run on a few
calibration images with every quantized node's activation inputs and output exposed; a
node's damage is the error of its output (Q/DQ graph vs fp32 graph; each channel's relative
L2 error, averaged over channels; the output as its readers see it, after any Q/DQ the
quantizer put on it) minus the error of its inputs. It measures what the node itself adds
(an activation scale that crushes small channels beside a large one, weights rounded to
zero), not the error it inherits; after each revert the ranking is measured again.
Whole-tensor figures (``onnxruntime.quantization.qdq_loss_debug``'s SQNR, a relative L2 over
the tensor) miss exactly the failure that breaks small nets: one channel 1000x larger
dominates the tensor's norm, so crushing all the others barely moves them. Measured on the
outlier model (``partialnet.bench.data.outliers``): whole-tensor relative L2 ranked the
partial conv and the PatchMerging conv first but never the stem conv whose output ONNX
Runtime quantizes ahead of the Split; reverting 5 layers left top-1 at 9.7%. Per channel,
the stem conv ranks first and 3 reverted layers restore 99.16% (fp32 99.44%).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.export.gate.parity import ParityResult
from partialnet.export.int8_fallback import search, with_outcome

log = logging.getLogger(__name__)

RANK_IMAGES = 16


class OnnxRanker:
    """Per-node damage of a Q/DQ ONNX against its fp32 source (see the module docstring)."""

    def __init__(self, fp32_path: Path, images: np.ndarray, candidates: Sequence[str]) -> None:
        import onnx

        self.fp32_path = Path(fp32_path)
        proto = onnx.load(str(fp32_path))
        dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
        self.batch = dim0.dim_value if dim0.HasField("dim_value") else None
        self.input_name = proto.graph.input[0].name
        constants = {t.name for t in proto.graph.initializer}
        constants |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
        wanted = set(candidates)
        # node -> (activation inputs, output), by the fp32 graph's tensor names; the Q/DQ
        # quantizer keeps them (it inserts Q/DQ pairs after the original tensors).
        self.nodes = {
            n.name: ([i for i in n.input if i and i not in constants], n.output[0])
            for n in proto.graph.node
            if n.name in wanted
        }
        self.images = np.ascontiguousarray(images[: max(RANK_IMAGES, self.batch or 1)])
        self.reference = self._run(proto)

    def tensors(self) -> list[str]:
        names = {t for ins, out in self.nodes.values() for t in (*ins, out)}
        return sorted(names)

    def _run(self, proto: Any, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
        import onnx
        import onnxruntime as ort

        model = onnx.ModelProto()
        model.CopyFrom(proto)
        present = {o.name for o in model.graph.output}
        names = self.tensors() + [e for e in extra if e not in self.tensors()]
        for name in names:
            if name not in present:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        step = self.batch or len(self.images)
        runs = [
            session.run(names, {self.input_name: self.images[i : i + step]})
            for i in range(0, len(self.images) - step + 1, step)
        ]
        return {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}

    def rank(self, qdq_path: Path, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """(node, damage) for every candidate not in ``exclude``, worst first."""
        import onnx

        proto = onnx.load(str(qdq_path))
        seen = _after_qdq(proto)
        got = self._run(proto, extra=sorted(set(seen.values())))

        def err(name: str, quantized: str | None = None) -> float:
            return channel_error(self.reference[name], got[quantized or name])

        damage = []
        for node, (ins, out) in self.nodes.items():
            if node in exclude:
                continue
            inherited = max((err(i) for i in ins), default=0.0)
            # An output the quantizer rounds for its readers counts as the node's damage:
            # excluding the node removes that rounding (ONNX Runtime quantizes a Conv's
            # output before a Split, where one scale serves both halves).
            damage.append((node, err(out, seen.get(out)) - inherited))
        return sorted(damage, key=lambda item: (-item[1], item[0]))


def channel_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over channels of each channel's relative L2 error (NCHW: axis 1; else the
    whole tensor). Per channel, because one large channel dominates a whole-tensor norm and
    hides the small channels a shared scale crushed."""
    ref, out = reference.astype(np.float64), candidate.astype(np.float64)
    if ref.ndim == 4:
        ref, out = (
            np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1),
            np.moveaxis(out, 1, 0).reshape(out.shape[1], -1),
        )
    else:
        ref, out = ref.reshape(1, -1), out.reshape(1, -1)
    norms = np.linalg.norm(ref, axis=1)
    floor = max(float(norms.max()) * 1e-3, 1e-30)  # dead channels: no ratio of noise
    return float((np.linalg.norm(out - ref, axis=1) / np.maximum(norms, floor)).mean())


def _after_qdq(proto: Any) -> dict[str, str]:
    """tensor -> the DequantizeLinear output its readers see, for tensors rounded by a
    QuantizeLinear/DequantizeLinear pair."""
    q_of = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    return {t: dq_of[q] for t, q in q_of.items() if q in dq_of}


def quantized_nodes(fp32_path: Path, islands: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Names of the nodes the quantizer quantizes: ``op_types`` minus the fp32 islands."""
    import onnx

    proto = onnx.load(str(fp32_path))
    return [n.name for n in proto.graph.node if n.op_type in op_types and n.name not in islands]


def onnx_with_fallback(ctx: Any, fp32: Path, path: Path, flavour: str) -> dict[str, Any]:
    """The Q/DQ ONNX of ``flavour`` at ``path``, with the fewest float layers the greedy
    search needed for the gate's rule; facts for the manifest (``float_layers``,
    ``fallback``). ``ctx`` is the export's TargetContext."""
    from partialnet.export.targets.onnx.int8 import (
        QUANTIZED_OP_TYPES,
        _import_onnx,
        fp32_islands,
        quantize_onnx,
    )
    from partialnet.runtimes import open_runner

    islands = fp32_islands(_import_onnx().load(str(fp32)))
    quantizable = quantized_nodes(fp32, islands, QUANTIZED_OP_TYPES)
    facts: dict[str, Any] = {}
    ranker: OnnxRanker | None = None

    def quantize(float_layers: list[str]) -> None:
        batches = ctx.calibration_batches()
        facts.clear()
        facts.update(quantize_onnx(fp32, path, batches, flavour=flavour, exclude=float_layers))

    def judge() -> ParityResult:
        return ctx.judge(path, lambda p: open_runner("onnxruntime", p, allow_spinning=False))

    def rank(float_layers: list[str]) -> list[tuple[str, float]]:
        nonlocal ranker
        if ranker is None:
            log.info(
                "      int8: %s Q/DQ fails the gate; ranking layers to return to float", flavour
            )
            ranker = OnnxRanker(fp32, ctx.calibration, quantizable)
        return ranker.rank(path, float_layers)

    outcome = search(quantize, judge, rank, quantizable)
    return with_outcome(ctx, facts, outcome, flavour)
