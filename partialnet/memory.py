"""Whether exporting a model at an input size can fit in this machine's memory, decided
before any work from the sizes of what the export must hold.

The last stage's self-attention is what grows fastest: its relative-position bias is baked
into the inference form as a constant of heads x N x N floats per block (N = H/32 * W/32
tokens), so at 8192 px one t0 block holds 4 x 65536^2 floats (69 GB). That constant exists
several times during an export (the inference form, the ONNX graph in memory and its
serialized bytes, each runtime that loads it for the gate), and each gate batch computes
attention scores of the same size. The estimate is a lower bound built from those tensors
alone; runtimes and SDKs add their own overhead on top.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from torch import nn

from partialnet.errors import InputShapeError

# Copies of the baked bias alive at the peak: inference form, ONNX proto, its serialized
# bytes, one runtime session for the gate.
BIAS_COPIES = 4
# Live float tensors of the widest (first) stage per image during the eager forward: the
# block input, the MLP's hidden layer (mlp_ratio 2 = two tensors' worth) and its output.
STAGE0_TENSORS = 5
# Attention scores, their softmax and the bias added to them, per image and block.
SCORE_TENSORS = 3
FLOAT_BYTES = 4


def export_memory_estimate(model: nn.Module, size: tuple[int, int], batch: int) -> int:
    """Bytes an export of ``model`` at ``size`` (H, W) with gate batches of ``batch`` needs
    at least (see the module docstring)."""
    from partialnet.layers import RPEAttention

    cfg = model.cfg
    h, w = size
    tokens = (h // 32) * (w // 32)
    weights = sum(p.numel() for p in model.parameters()) * FLOAT_BYTES
    heads = [m.num_heads for m in model.modules() if isinstance(m, RPEAttention)]
    bias = sum(heads) * tokens * tokens * FLOAT_BYTES
    scores = max(heads, default=0) * tokens * tokens * FLOAT_BYTES
    stage0 = cfg.embed_dim * (h // cfg.patch_stride) * (w // cfg.patch_stride) * FLOAT_BYTES
    per_image = STAGE0_TENSORS * stage0 + SCORE_TENSORS * scores
    return BIAS_COPIES * bias + 3 * weights + batch * per_image


def memory_limit() -> int | None:
    """Physical memory, or the cgroup's limit when lower; None where neither is known."""
    limits = []
    with contextlib.suppress(AttributeError, ValueError, OSError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(int(text))
    return min(limits) if limits else None


def check_export_fits(model: nn.Module, size: tuple[int, int], batch: int) -> None:
    """Refuse, with the estimate, an input size whose export cannot fit in memory here."""
    limit = memory_limit()
    need = export_memory_estimate(model, size, batch)
    if limit is not None and need > limit:
        raise InputShapeError(
            f"exporting {model.cfg.name} at {size[0]}x{size[1]} needs at least "
            f"{need / 2**30:.1f} GiB of memory (the last stage's attention over "
            f"{(size[0] // 32) * (size[1] // 32)} tokens), and this machine has "
            f"{limit / 2**30:.1f} GiB: choose a smaller --imgsz"
        )
