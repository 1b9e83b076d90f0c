"""What the export's LiteRT builder does: fp32/fp16 conversion, or int8 from the fp32 one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialnet.export.options import Precision
from partialnet.export.targets.litert.convert import (
    export_litert,
    litert_metadata,
    write_metadata,
)


def build_litert(ctx: Any, path: Path) -> dict[str, Any]:
    """``ctx`` is the export's ``TargetContext``; writes ``path`` in its scratch directory."""
    opts = ctx.options
    precision = opts.precision
    common = {
        "batch": opts.batch,
        "nhwc": opts.litert_nhwc,
        "metadata": ctx.metadata,
        "scratch": ctx.scratch,
    }
    if precision is not Precision.INT8:
        return export_litert(ctx.inference, path, precision=precision.value, **common)
    from partialnet.export.targets.litert.int8 import quantize_litert

    fp32 = ctx.scratch / f"{ctx.stem}-fp32-source.tflite"
    facts = export_litert(ctx.inference, fp32, precision="fp32", **common)
    ctx.say("      int8: calibrating the LiteRT model")
    unlabelled = path.with_name(f"{path.stem}-nometa.tflite")
    facts |= quantize_litert(fp32, unlabelled, ctx.calibration, nhwc=opts.litert_nhwc)
    write_metadata(unlabelled, path, litert_metadata(ctx.metadata, opts.litert_nhwc))
    unlabelled.unlink()
    return facts
