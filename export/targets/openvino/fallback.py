"""The OpenVINO int8 fallback: plain NNCF first, and NNCF's own accuracy control when its IR
fails the gate (rather than the Q/DQ search of ``partialnet.export.int8_fallback``: NNCF
ranks and reverts layers itself, on the gate's images and labels)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from partialnet.export.int8_fallback import MAX_FLOAT_FRACTION, FallbackOutcome, with_outcome

log = logging.getLogger(__name__)


def with_fallback(ctx: Any, onnx_path: Path, staged: Path, runner: Any) -> dict[str, Any]:
    """The int8 IR in ``staged``: plain NNCF first; if the gate fails, NNCF's accuracy
    control on the gate's images (see ``partialnet.export.targets.openvino.accuracy``)."""
    from partialnet.export.gate.parity import infer_in_batches
    from partialnet.export.targets.openvino.accuracy import (
        quantizable_ops,
        quantize_openvino_accuracy_control,
    )
    from partialnet.export.targets.openvino.convert import ir_xml
    from partialnet.export.targets.openvino.int8 import quantize_openvino, read_fp32_model

    started = time.perf_counter()
    facts = quantize_openvino(
        onnx_path, ir_xml(staged), ctx.calibration_batches(), metadata=ctx.metadata
    )
    before = ctx.judge(staged, runner)
    quantizable = len(quantizable_ops(read_fp32_model(onnx_path)))
    after = before
    if not before.passed:
        log.info("      int8: NNCF's IR fails the gate; NNCF accuracy control on the gate images")
        gate = ctx.gate_images
        step = ctx.options.sample_batch
        reference = infer_in_batches(ctx.reference, gate.images, step, (step, step))
        facts = quantize_openvino_accuracy_control(
            onnx_path,
            ir_xml(staged),
            ctx.calibration_batches(),
            gate.images,
            labels=gate.labels,
            reference=reference,
            max_drop=ctx.options.max_drop / 100,
            max_float_layers=max(1, math.floor(MAX_FLOAT_FRACTION * quantizable)),
            metadata=ctx.metadata,
        )
        after = ctx.judge(staged, runner)
    outcome = FallbackOutcome(
        list(facts.pop("float_layers", [])),
        before,
        after,
        time.perf_counter() - started,
        quantizable=quantizable,
    )
    return with_outcome(ctx, facts, outcome, "openvino")
