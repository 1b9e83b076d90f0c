"""How the LiteRT target is built in scratch: fp32/fp16 converted from the inference form,
int8 quantized from the fp32 conversion; its options checked before any work."""

from __future__ import annotations

import logging
from typing import Any

from partialnet.export.options import ExportOptions, Precision, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, TargetOption, opener
from partialnet.runtimes.base import Runtime

log = logging.getLogger(__name__)

OPTIONS = (
    TargetOption(
        "litert_nhwc",
        "--litert-nhwc",
        False,
        "channel-last (N, H, W, C) input and feature maps, as Android bitmaps arrive",
        switch=True,
    ),
)


def check_options(options: ExportOptions, num_classes: int) -> bool:
    """Refuse a dynamic batch up front; the channel-last choice for the builder."""
    from partialnet.export.targets.litert.convert import check_litert_options

    check_litert_options(options.dynamic_batch)
    return bool(options.target_options.get("litert_nhwc"))


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    from partialnet.export.targets.litert.convert import (
        export_litert,
        litert_metadata,
        write_metadata,
    )

    nhwc = bool(ctx.target_options.get(Target.LITERT))
    name = ctx.artifact_name(Target.LITERT)
    path = ctx.scratch / name
    common: dict[str, Any] = {
        "batch": ctx.options.batch,
        "nhwc": nhwc,
        "metadata": ctx.metadata,
        "scratch": ctx.scratch,
    }
    if not ctx.int8:
        facts = export_litert(ctx.inference, path, precision=ctx.options.precision.value, **common)
    else:
        from partialnet.export.targets.litert.int8 import quantize_litert

        fp32 = ctx.scratch / f"{ctx.stem}-fp32-source.tflite"
        facts = export_litert(ctx.inference, fp32, precision=Precision.FP32.value, **common)
        log.info("      int8: calibrating the LiteRT model")
        unlabelled = path.with_name(f"{path.stem}-nometa.tflite")
        facts |= quantize_litert(fp32, unlabelled, ctx.calibration, nhwc=nhwc)
        write_metadata(unlabelled, path, litert_metadata(ctx.metadata, nhwc))
        unlabelled.unlink()
    runner = opener(Runtime.LITERT)
    return [BuiltArtifact(Target.LITERT, path, name, facts, None, runner)]
