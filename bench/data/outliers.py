"""A trained PartialNet that plain int8 breaks, with the same fp32 function.

Real trained networks carry a few activation channels far larger than the rest; per-tensor
int8 activations then spend their 256 levels on those channels and crush the others, and
per-output-channel int8 weights round the inverse-scaled weights that read them to zero.
``amplify_channels`` makes such a model from any trained one without changing what it
computes: inside one stage, a few channels of the residual stream are multiplied by
``factor`` where they are written (the BatchNorm before the stage, each block's last MLP
conv) and divided by it where they are read (each block's partial 3x3 conv, the next
PatchMerging conv). Only channels the partial conv reads (``< dim // n_div``) are taken, so
the channel attention's statistics never see them. ``factor`` is a power of two: the
multiplications are exact in float32, so fp32 logits move only by re-association.

Used by the int8 fallback's tests and its benchmark (``partialnet.bench.goals.int8``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from partialnet.layers import PartialConv, PATChannel, PatchMerging

DEFAULT_FACTOR = 2.0**10
DEFAULT_CHANNELS = (0, 3)


@torch.no_grad()
def amplify_channels(
    model: nn.Module,
    *,
    stage: int = 0,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    factor: float = DEFAULT_FACTOR,
) -> nn.Module:
    """A deep copy of the eager classifier ``model`` with ``channels`` of stage ``stage``'s
    residual stream scaled by ``factor`` (0 <= stage <= 2; see the module docstring)."""
    if not 0 <= stage <= 2:
        raise ValueError(f"stage must be 0, 1 or 2 (stage 3 has no PatchMerging after it): {stage}")
    out = copy.deepcopy(model)
    blocks = out.stages[2 * stage].blocks
    writer = out.patch_embed.norm if stage == 0 else out.stages[2 * stage - 1].norm
    reader = out.stages[2 * stage + 1]
    assert isinstance(reader, PatchMerging)
    idx = torch.as_tensor(list(channels))
    for block in blocks:
        mixer = block.spatial_mixing
        if not isinstance(mixer, (PATChannel, PartialConv)) or int(idx.max()) >= mixer.dim_conv:
            raise ValueError(
                f"channels {list(channels)} must be read by stage {stage}'s partial conv "
                f"(first {getattr(mixer, 'dim_conv', '?')} channels of a PAT_ch/PConv mixer)"
            )
    writer.weight[idx] *= factor
    writer.bias[idx] *= factor
    for block in blocks:
        block.spatial_mixing.partial_conv3.weight[:, idx] /= factor
        last = [m for m in block.mlp if isinstance(m, nn.Conv2d)][-1]
        if last is not block.mlp[-1]:
            raise ValueError("the MLP ends in a spatial-attention layer: not supported")
        last.weight[idx] *= factor
    reader.reduction.weight[:, idx] /= factor
    return out
